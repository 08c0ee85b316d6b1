"""An eighteenth round: StyleTTS 2 / Kokoro voice models (one state dict per module), OpenNMT-py checkpoints (the
generator saved apart from the model), MLC-LLM folders (params_shard_*.bin, ndarray-cache.json, mlc-chat-config.json),
fastText's model.bin, llamafiles, skops files and Stable-Baselines3 zips."""

from __future__ import annotations

import argparse
import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
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


def _mlc_folder(folder: Path) -> Path:
    """An MLC-LLM model folder as mlc_llm convert_weight / gen_config write it (mlc-ai's *-MLC repos)."""
    folder.mkdir()
    (folder / "mlc-chat-config.json").write_text(json.dumps({
        "model_type": "qwen2", "quantization": "q4f16_1", "model_config": {"hidden_size": 64, "num_hidden_layers": 2,
                                                                           "vocab_size": 128},
        "vocab_size": 128, "context_window_size": 2048, "conv_template": {"name": "chatml"}}))
    records, blob = [], b""
    rng = np.random.default_rng(0)
    for name, shape, dtype in [("model.embed_tokens.q_weight", [128, 8], "uint32"),
                               ("model.embed_tokens.q_scale", [128, 2], "float16")]:
        data = rng.integers(0, 2**15, size=shape).astype(dtype).tobytes()
        records.append({"name": name, "shape": shape, "dtype": dtype, "format": "f32-to-bf16", "nbytes": len(data),
                        "byteOffset": len(blob)})
        blob += data
    (folder / "params_shard_0.bin").write_bytes(blob)
    (folder / "ndarray-cache.json").write_text(json.dumps({
        "metadata": {"ParamSize": 2, "ParamBytes": len(blob), "BitsPerParam": 4.5},
        "records": [{"dataPath": "params_shard_0.bin", "format": "raw-shard", "nbytes": len(blob),
                     "records": records, "md5sum": "0"}]}))
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_mlc_llm_files_are_named_and_their_config_is_not_planned_as_transformers(tmp_path: Path) -> None:
    """The folder and its params_shard_0.bin were "not a safetensors file nor a PyTorch pickle"; ndarray-cache.json
    said "point at the weights beside it (params_shard_0.bin)", which fails so; mlc-chat-config.json (a top-level
    model_type) was planned by plan-devices as a default-size Qwen2 "config.json", 33 GPUs for a tiny model."""
    folder = _mlc_folder(tmp_path / "Qwen2-0.5B-Instruct-q4f16_1-MLC")
    for source in (folder, folder / "params_shard_0.bin"):
        result = run_cli("inspect", str(source))
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and result.stdout == "", result.stdout
        assert "params_shard_0.bin: this is a shard of an MLC-LLM model's weights" in line, line
        assert "ndarray-cache.json beside it locates by name and offset" in line, line
        assert "mlc_llm convert_weight wrote it from a Hugging Face model" in line, line
    for command in (("inspect",), ("plan-devices", "--gpu", "1GB"), ("check-dtype",)):
        result = run_cli(*command[:1], str(folder / "mlc-chat-config.json"), *command[1:])
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and result.stdout == "", (command, result.stdout)
        assert "this is MLC-LLM's mlc-chat-config.json" in line and "quantized as q4f16_1" in line, line
        assert "not a transformers config" in line and "point at the model folder" not in line, line
    result = run_cli("inspect", str(folder / "ndarray-cache.json"))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "this is MLC-LLM's ndarray-cache.json" in line, line
    assert "point at the weights beside it" not in line, line


def test_a_fasttext_model_bin_is_named_with_what_loads_it(tmp_path: Path) -> None:
    """facebook/fasttext-*-vectors keep a fastText model as model.bin: it was "not a PyTorch pickle"."""
    folder = tmp_path / "fasttext-en-vectors"
    folder.mkdir()
    (folder / "model.bin").write_bytes(struct.pack("<iid", 793712314, 12, 0.05) + bytes(range(256)) * 8)
    for source in (folder, folder / "model.bin"):
        result = run_cli("inspect", str(source))
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and result.stdout == "", result.stdout
        assert "model.bin: this is a fastText model" in line, line
        assert f"fasttext.load_model({str(folder / 'model.bin')!r}) loads it" in line, line
        assert "get_input_matrix()" in line, line


def _stored_zip(path: Path, members: dict[str, bytes], prefix: bytes = b"") -> None:
    path.write_bytes(prefix)
    with zipfile.ZipFile(path, "a") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_a_llamafile_is_named_with_the_gguf_inside(tmp_path: Path) -> None:
    """A llamafile (an Actually Portable Executable, its GGUF in an appended zip) was "not a PyTorch pickle"."""
    path = tmp_path / "TinyLlama-1.1B-Chat-v1.0.Q5_K_M.llamafile"
    gguf = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    _stored_zip(path, {"TinyLlama-1.1B-Chat-v1.0.Q5_K_M.gguf": gguf, ".args": b"-m\n"},
                prefix=b"MZqFpD='\n\n\x00" + bytes(500))
    result = run_cli("inspect", str(path))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert "this is a llamafile" in line and "its GGUF weights TinyLlama-1.1B-Chat-v1.0.Q5_K_M.gguf" in line, line
    assert "gguf_file=" in line, line


def test_skops_and_stable_baselines3_zips_are_named(tmp_path: Path) -> None:
    """A skops file was "zip archive has no data.pkl record (not a torch.save file, or damaged)"; a Stable-Baselines3
    zip listed policy.optimizer.pth among its "weight file(s)" and named no library."""
    skops = tmp_path / "skops-model.skops"
    _stored_zip(skops, {"schema.json": json.dumps({"__class__": "LogisticRegression", "protocol": 2}).encode(),
                        "a1b2.npy": b"\x93NUMPY"})
    result = run_cli("inspect", str(skops))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "this is a skops file" in line and "skops.io.load reads it" in line, line
    assert "damaged" not in line, line

    torch.manual_seed(0)
    policy = io.BytesIO()
    torch.save({"mlp_extractor.policy_net.0.weight": torch.randn(64, 8), "action_net.weight": torch.randn(4, 64)},
               policy)
    optimizer = io.BytesIO()
    torch.save({"state": {}, "param_groups": []}, optimizer)
    sb3 = tmp_path / "ppo-LunarLander-v2.zip"
    _stored_zip(sb3, {"data": b"{}", "pytorch_variables.pth": optimizer.getvalue(), "policy.pth": policy.getvalue(),
                      "policy.optimizer.pth": optimizer.getvalue(), "_stable_baselines3_version": b"2.0.0"})
    result = run_cli("inspect", str(sb3))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert "this is a Stable-Baselines3 model" in line and "point weightdoctor at policy.pth" in line, line
    # What it says to do works: the policy.pth inside is read.
    extracted = tmp_path / "policy.pth"
    extracted.write_bytes(policy.getvalue())
    code, data = run_json("inspect", str(extracted))
    assert code == 0 and data["num_tensors"] == 2


@pytest.mark.parametrize("name", ["model.bin", "params_shard_0.bin"])
def test_a_pytorch_file_under_these_names_is_still_read(tmp_path: Path, name: str) -> None:
    """Named by content or by an ndarray-cache.json beside it, never by the name alone: a torch.save file called
    params_shard_0.bin with no MLC file beside it is read."""
    torch.manual_seed(0)
    torch.save({"w": torch.randn(3, 3)}, tmp_path / name)
    code, data = run_json("inspect", str(tmp_path / name))
    assert code == 0 and data["num_tensors"] == 1


def test_a_diffusers_training_output_dir_points_at_the_latest_saves_models(tmp_path: Path) -> None:
    """diffusers' train_text_to_image.py --use_ema, mid-run: output_dir/checkpoint-N/{unet, unet_ema}/ beside
    accelerate's optimizer.bin and RNG states. The output_dir was "folder holds no weight file" and no more."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    run = tmp_path / "sd-pokemon-model"
    for step in (500, 1000):
        save = run / f"checkpoint-{step}"
        for model in ("unet", "unet_ema"):
            (save / model).mkdir(parents=True)
            save_file({"conv_in.weight": torch.randn(8, 4, 3, 3)}, save / model / "diffusion_pytorch_model.safetensors")
            (save / model / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
        torch.save({"state": {}, "param_groups": []}, save / "optimizer.bin")
    for command in (("inspect",), ("plan-devices", "--gpu", "1GB")):
        result = run_cli(command[0], str(run), *command[1:])
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and result.stdout == "", result.stdout
        assert "its subfolders checkpoint-500/, checkpoint-1000/ are one run's saves" in line, line
        assert "(checkpoint-1000/unet/, checkpoint-1000/unet_ema/, as diffusers' training scripts" in line, line
        assert line.endswith(f"e.g. {run / 'checkpoint-1000' / 'unet'} (the latest save's)"), line
    # What it says to do works.
    code, data = run_json("inspect", str(run / "checkpoint-1000" / "unet"))
    assert code == 0 and data["num_tensors"] == 1
    # Numbered folders of no common save name, or holding nothing, add nothing.
    (tmp_path / "empty-run" / "checkpoint-1").mkdir(parents=True)
    result = run_cli("inspect", str(tmp_path / "empty-run"))
    assert result.exit_code == 2 and "one run's saves" not in result.stderr, result.stderr


def _small_base(path: Path) -> torch.nn.Module:
    """A model with the module kinds PEFT's methods adapt (an embedding, two Linears, a LayerNorm), saved as a
    safetensors file at `path`, as the base an adapter is compared against."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    base = torch.nn.ModuleDict({"embed": torch.nn.Embedding(32, 64), "q": torch.nn.Linear(64, 64),
                                "v": torch.nn.Linear(64, 64), "norm": torch.nn.LayerNorm(64)})
    save_file({name: tensor.contiguous() for name, tensor in base.state_dict().items()}, path)
    return base


def _peft_configs() -> dict[str, Any]:
    import peft

    return {
        "VeRA": peft.VeraConfig(r=4, target_modules=["q", "v"], save_projection=True),
        "OFT": peft.OFTConfig(r=0, oft_block_size=8, target_modules=["q", "v"]),
        "BOFT": peft.BOFTConfig(boft_block_size=8, target_modules=["q", "v"]),
        "LoHa": peft.LoHaConfig(r=4, target_modules=["q", "v"]),
        "LoKr": peft.LoKrConfig(r=4, target_modules=["q", "v"]),
        "FourierFT": peft.FourierFTConfig(n_frequency=16, target_modules=["q", "v"]),
        "HRA": peft.HRAConfig(r=4, target_modules=["q", "v"]),
        "LN Tuning": peft.LNTuningConfig(target_modules=["norm"]),
        "Trainable Tokens": peft.TrainableTokensConfig(target_modules=["embed"], token_indices=[1, 2]),
    }


@pytest.mark.parametrize("method", list(_peft_configs()))
def test_a_peft_adapter_of_another_method_against_its_base_is_an_adapter_that_fits(tmp_path: Path, method: str) -> None:
    """Only LoRA, IA3 and AdapterHub adapters were known: a VeRA (OFT, BOFT, LoHa, LoKr, FourierFT, HRA, LN-tuning,
    trainable-tokens) adapter folder, as peft's save_pretrained writes it, against the base it was made for was
    "unknown: no known cause: these weights will not load" for every base weight and every adapter tensor, worst
    severity error."""
    from peft import get_peft_model

    base = _small_base(tmp_path / "base.safetensors")
    adapter = tmp_path / "adapter"
    get_peft_model(base, _peft_configs()[method]).save_pretrained(str(adapter))
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "base.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", data["unexpected"]
    assert all(entry["reason"] == "adapter" for entry in data["unexpected"]), data["unexpected"]
    assert any(entry["detail"].startswith(f"{method} on ") for entry in data["unexpected"]), data["unexpected"]
    assert all(entry["reason"] == "adapter-base" for entry in data["missing"]), data["missing"]
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    # LoHa's and LoKr's factors make a product of the weight's shape, compared since thirdparty23; VeRA's, OFT's,
    # BOFT's, HRA's and LN tuning's tensors are sized by the layer's widths, compared since thirdparty24.
    # Trainable tokens' rows are compared with the embedding's width since review64.
    compared = "(shapes not compared: " if method == "FourierFT" else "with shapes that fit"
    assert f"A is a PEFT adapter: {method} on " in note and compared in note, note
    assert "load it with peft's PeftModel.from_pretrained, given " in note, note  # B a file: said in words
    # Against a model without the modules it adapts, it is an error naming them.
    from safetensors.torch import save_file

    save_file({"other.weight": torch.zeros(4, 4)}, tmp_path / "other.safetensors")
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "other.safetensors"))
    assert code == 1 and data["worst_severity"] == "error", data["worst_severity"]
    assert any("which B does not have" in entry["detail"] for entry in data["unexpected"]), data["unexpected"]


def test_a_lora_with_trainable_tokens_against_its_base_is_an_adapter_that_fits(tmp_path: Path) -> None:
    """LoRA's trainable_token_indices saves the new tokens as <embedding>.token_adapter.trainable_tokens_delta
    beside the pairs: that one tensor was "saved for ...token_adapter.trainable_tokens_delta, which B does not
    have", an error."""
    from peft import LoraConfig, get_peft_model

    base = _small_base(tmp_path / "base.safetensors")
    adapter = tmp_path / "adapter"
    config = LoraConfig(r=4, target_modules=["q", "v"], trainable_token_indices={"embed": [1, 2]})
    get_peft_model(base, config).save_pretrained(str(adapter))
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "base.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", data["unexpected"]
    tokens = next(e for e in data["unexpected"] if e["name"].endswith("token_adapter.trainable_tokens_delta"))
    assert tokens["reason"] == "adapter" and tokens["detail"] == "Trainable Tokens on embed.weight", tokens
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert "LoRA (rank 4) and Trainable Tokens on 3 modules, 3 of them in B with shapes that fit;" in note, note


def test_a_styletts2_note_of_many_modules_names_a_few_and_counts_the_rest(tmp_path: Path) -> None:
    """A file of 40 modules (or a hostile one of 100,000) is not listed whole in one warning."""
    net = {name: {"w": torch.zeros(1)} for name in (*_STYLETTS2_MODULES, *(f"extra_{i}" for i in range(35)))}
    path = tmp_path / "many.pth"
    torch.save({"net": net}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["num_tensors"] == 40
    note = next(w for w in data["warnings"] if "StyleTTS 2 / Kokoro" in w)
    assert "its 40 modules' state dicts (bert, bert_encoder, predictor, decoder, text_encoder, extra_0, extra_1, " \
        "and 33 more)" in note and "extra_2" not in note, note


@pytest.mark.parametrize(("method", "code", "words"), [
    ("OFT", "all-zero", "an OFT / BOFT adapter still at its initialization (peft starts its rotation parameters at "
                        "zero, the identity rotation): it leaves the base weights as they are"),
    ("BOFT", "all-zero", "an OFT / BOFT adapter still at its initialization"),
    ("BOFT", "constant", "an OFT / BOFT adapter's scale still at its initialization (peft starts it at ones)"),
    ("HRA", "duplicate-columns", "an HRA adapter still at its initialization (peft starts each Householder vector "
                                 "twice, so that each pair of reflections cancels: the identity)"),
])
def test_an_untrained_oft_boft_or_hra_adapter_is_named_as_one_not_a_broken_layer(
        tmp_path: Path, method: str, code: str, words: str) -> None:
    """inspect --stats called OFT's zero rotation parameters (the identity) "a layer that was never initialized or
    was zeroed; it passes nothing on", BOFT's unit scales "a constant weight never breaks symmetry", and told to
    "re-initialize randomly" HRA's paired Householder vectors, which peft repeats by design."""
    from peft import get_peft_model

    base = _small_base(tmp_path / "base.safetensors")
    adapter = tmp_path / "adapter"
    get_peft_model(base, _peft_configs()[method]).save_pretrained(str(adapter))
    exit_code, data = run_json("inspect", str(adapter), "--stats")
    assert exit_code == 0
    found = [f for f in data["findings"] if f["code"] == code]
    assert found and all(words in f["hint"] for f in found), data["findings"]
    hints = " ".join(f["hint"] for f in data["findings"])
    assert "never initialized" not in hints and "re-initialize randomly" not in hints, hints
    assert "never breaks symmetry" not in hints, hints


def test_planning_a_gliner_folder_names_its_own_config(tmp_path: Path) -> None:
    """urchade/gliner_* keep gliner_config.json beside pytorch_model.bin and no config.json: the plan said "no
    config.json to say which modules must stay whole", as if the folder had no config at all."""
    folder = tmp_path / "gliner_multi-v2.1"
    folder.mkdir()
    (folder / "gliner_config.json").write_text(json.dumps({
        "model_name": "microsoft/mdeberta-v3-base", "span_mode": "markerV0", "hidden_size": 16, "max_width": 12}))
    torch.manual_seed(0)
    layer = "token_rep_layer.bert_layer.model.encoder.layer.{}.attention.self.query_proj.weight"
    torch.save({layer.format(0): torch.randn(16, 16), layer.format(1): torch.randn(16, 16),
                "span_rep_layer.span_rep_layer.project_start.0.weight": torch.randn(32, 16)},
               folder / "pytorch_model.bin")
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0, data
    warning = next(w for w in data["warnings"] if "which modules must stay whole" in w)
    assert warning.startswith("no config.json (gliner_config.json beside the weights is GLiNER's own config, which "
                              "GLiNER.from_pretrained reads) to say"), warning


def test_a_kokoro_folders_config_is_named_as_kokoros(tmp_path: Path) -> None:
    """hexgrad/Kokoro-82M's config.json (istftnet, plbert; no model_type): check-dtype said "config.json sets no
    torch_dtype/dtype: dtype='auto' goes by the weights", a from_pretrained that never reads it, and plan-devices
    "config.json (no model_type) does not say"."""
    folder = tmp_path / "Kokoro-82M"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "istftnet": {"upsample_rates": [10, 6]}, "dim_in": 64, "hidden_dim": 512, "n_layer": 3, "n_token": 178,
        "style_dim": 128, "plbert": {"hidden_size": 768, "num_hidden_layers": 12}, "vocab": {"a": 1}}))
    torch.manual_seed(0)
    modules = {name: {f"module.layers.{i}.weight": torch.randn(4, 4) for i in range(2)}
               for name in _STYLETTS2_MODULES}
    torch.save(modules, folder / "kokoro-v1_0.pth")
    code, data = run_json("check-dtype", str(folder))
    assert code == 0 and data["config_agreement"]["message"] == (
        "Kokoro's own config (no dtype field): KModel builds the model in float32 and load_state_dict copies the "
        "weights into it"), data["config_agreement"]
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and data["num_params"] == 5 * 2 * 16, data["num_params"]
    warning = next(w for w in data["warnings"] if "which modules must stay whole" in w)
    assert warning.startswith("config.json (Kokoro's own config, which its KModel reads, not a transformers one) "
                              "does not say"), warning


def test_converting_a_kokoro_or_opennmt_file_says_their_loaders_cannot_read_the_flat_output(tmp_path: Path) -> None:
    """Read together, the modules (or model and generator) are written flat: KModel / load_checkpoint and
    OpenNMT-py / ct2-opennmt-py-converter take a .pth / .pt apart by their own keys and cannot load it; convert and
    shard said nothing of it. A GAN's flat generator.* (no OpenNMT-py checkpoint) gets no such warning."""
    torch.manual_seed(0)
    kokoro = tmp_path / "kokoro-v1_0.pth"
    torch.save({name: _module_state(4) for name in _STYLETTS2_MODULES}, kokoro)
    opennmt = tmp_path / "averaged-10-epoch.pt"
    _opennmt_checkpoint(opennmt)
    gan = tmp_path / "gan.pt"
    torch.save({"generator.0.weight": torch.randn(4, 4), "discriminator.0.weight": torch.randn(4, 4)}, gan)
    out = tmp_path / "out"
    out.mkdir()
    for source, words in ((kokoro, "a StyleTTS 2 / Kokoro model's modules written flat (bert.*, decoder.*, ...): "
                                   "KModel and StyleTTS 2's load_checkpoint torch.load a .pth of one state dict per "
                                   "module"),
                          (opennmt, "an OpenNMT-py model written flat with its generator (generator.*): OpenNMT-py "
                                    "and CTranslate2's ct2-opennmt-py-converter torch.load a .pt of")):
        for suffix, extra in ((".safetensors", ()), (".bin", ("--to", "bin"))):
            result = run_cli("convert", str(source), "-o", str(out / f"{source.stem}{suffix}"), *extra)
            line = " ".join(result.stderr.split())
            assert result.exit_code == 0, result.stderr
            assert words in line and "cannot load what is written" in line, line
        result = run_cli("shard", str(source), "-o", str(out / f"{source.stem}-shards"), "--max", "1KB")
        assert result.exit_code == 0 and words in " ".join(result.stderr.split()), result.stderr
    result = run_cli("convert", str(gan), "-o", str(out / "gan.safetensors"))
    assert result.exit_code == 0 and "written flat" not in result.stderr, result.stderr
