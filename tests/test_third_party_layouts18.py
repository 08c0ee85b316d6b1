"""An eighteenth round: StyleTTS 2 / Kokoro voice models (one state dict per module), OpenNMT-py checkpoints (the
generator saved apart from the model), MLC-LLM folders (params_shard_*.bin, ndarray-cache.json, mlc-chat-config.json),
fastText's model.bin, llamafiles, skops files and Stable-Baselines3 zips."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json

_STYLETTS2_MODULES = ("bert", "bert_encoder", "predictor", "decoder", "text_encoder")


def _module_state(width: int) -> dict[str, torch.Tensor]:
    """One StyleTTS 2 module's state dict as its DataParallel training saved it (every name under module.)."""
    return {"module.weight": torch.randn(width, 4), "module.bias": torch.randn(width)}


def test_a_kokoro_or_styletts2_file_reads_every_modules_state_dict(tmp_path: Path) -> None:
    """kokoro-v1_0.pth holds {"bert": ..., "bert_encoder": ..., "predictor": ..., "decoder": ..., "text_encoder":
    ...} and KModel loads each into its module; StyleTTS 2's training saves them (and more) under "net". Read as "the
    state dict at bert (a training checkpoint)", the file counted one module of five (82M parameters as 6M)."""
    torch.manual_seed(0)
    kokoro = tmp_path / "kokoro-v1_0.pth"
    torch.save({name: _module_state(8 + i) for i, name in enumerate(_STYLETTS2_MODULES)}, kokoro)
    code, data = run_json("inspect", str(kokoro))
    assert code == 0 and data["nested_key"] is None, data["nested_key"]
    assert data["num_tensors"] == 10 and data["num_params"] == sum((8 + i) * 5 for i in range(5)), data["num_params"]
    names = {tensor["name"] for tensor in data["tensors"]}
    assert {"bert.module.weight", "decoder.module.bias", "text_encoder.module.weight"} <= names, names
    note = next(w for w in data["warnings"] if "StyleTTS 2 / Kokoro" in w)
    assert "5 modules' state dicts (bert, bert_encoder, predictor, decoder and text_encoder) are read together" in note
    assert "Kokoro's KModel load each into the module of its name; --key bert reads one alone" in note, note
    code, data = run_json("inspect", str(kokoro), "--key", "predictor")
    assert code == 0 and data["num_tensors"] == 2 and data["nested_key"] == "predictor"

    # A StyleTTS 2 training checkpoint (epoch_2nd_*.pth): the modules under "net", beside the optimizer and counters.
    training = tmp_path / "epoch_2nd_00019.pth"
    net = {name: _module_state(4) for name in (*_STYLETTS2_MODULES, "style_encoder", "diffusion", "mpd")}
    torch.save({"net": net, "optimizer": {"state": {}, "param_groups": []}, "iters": 100, "val_loss": 0.5,
                "epoch": 19}, training)
    code, data = run_json("inspect", str(training))
    assert code == 0 and data["nested_key"] == "net" and data["num_tensors"] == 16, data["num_tensors"]
    assert "epoch (int: 19)" in data["other_entries"], data["other_entries"]
    assert any("8 modules' state dicts" in w and "--key net.bert reads one alone" in w for w in data["warnings"])
    # --key net, as the note's path spells it, reads the modules together too (it was "not a mapping of tensors").
    code, data = run_json("inspect", str(training), "--key", "net")
    assert code == 0 and data["num_tensors"] == 16, data
    # convert writes every module, under the names the note gives.
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("convert", str(kokoro), "-o", str(out / "kokoro.safetensors"))
    assert result.exit_code == 0, result.stderr
    code, data = run_json("inspect", str(out / "kokoro.safetensors"))
    assert code == 0 and data["num_tensors"] == 10


def test_a_plain_dict_of_state_dicts_is_not_taken_for_styletts2(tmp_path: Path) -> None:
    """Only StyleTTS 2's module names are read together: another dict of two state dicts keeps the key search."""
    torch.manual_seed(0)
    path = tmp_path / "gan.pth"
    torch.save({"bert": _module_state(4), "decoder": _module_state(4)}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "bert" and data["num_tensors"] == 2, data["nested_key"]
    assert not any("StyleTTS" in w for w in data["warnings"])


def _opennmt_checkpoint(path: Path) -> None:
    """What OpenNMT-py's ModelSaver writes: the model's state dict without its generator, the generator's apart,
    the vocabulary, the options (an argparse.Namespace) and the optimizer's state."""
    torch.manual_seed(0)
    model = {"encoder.embeddings.make_embedding.emb_luts.0.weight": torch.randn(50, 16),
             "encoder.transformer.0.self_attn.linear_keys.weight": torch.randn(16, 16),
             "decoder.embeddings.make_embedding.emb_luts.0.weight": torch.randn(60, 16),
             "decoder.transformer_layers.0.self_attn.linear_keys.weight": torch.randn(16, 16)}
    generator = {"0.weight": torch.randn(60, 16), "0.bias": torch.randn(60)}
    opt = argparse.Namespace(enc_layers=1, dec_layers=1, hidden_size=16, model_type="text")
    torch.save({"model": model, "generator": generator, "vocab": {"src": ["a"], "tgt": ["b"]}, "opt": opt,
                "optim": {"step": 10}}, path)


def test_an_opennmt_checkpoint_reads_its_generator_with_the_model(tmp_path: Path) -> None:
    """It read `model` alone: the generator (the output projection onto the target vocabulary, 976 of the 3,292
    parameters here, often the largest matrix) was left out of the counts, the plan and a conversion."""
    path = tmp_path / "averaged-10-epoch.pt"
    _opennmt_checkpoint(path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["num_tensors"] == 6 and data["num_params"] == 3292, data["num_params"]
    names = {tensor["name"] for tensor in data["tensors"]}
    assert {"generator.0.weight", "generator.0.bias", "decoder.transformer_layers.0.self_attn.linear_keys.weight"} \
        <= names, names
    note = next(w for w in data["warnings"] if "OpenNMT-py" in w)
    assert "model and generator (the output projection, which OpenNMT-py saves apart) are read together" in note
    assert "ct2-opennmt-py-converter" in note and "vocab, opt, optim beside them are not weights" in note, note
    code, data = run_json("inspect", str(path), "--key", "model")
    assert code == 0 and data["num_tensors"] == 4
    code, data = run_json("plan-devices", str(path), "--gpu", "1GB")
    assert code == 0 and data["num_params"] == 3292 and data["weights_bytes"] == 3292 * 4, data["num_params"]
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("convert", str(path), "-o", str(out / "model.safetensors"))
    assert result.exit_code == 0, result.stderr
    code, data = run_json("inspect", str(out / "model.safetensors"))
    assert code == 0 and data["num_tensors"] == 6
