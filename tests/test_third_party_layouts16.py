"""A sixteenth round: files people download from model-sharing sites and ask "is this safe, what is it, what loads
it": RVC and so-vits-svc voice models, GPT-SoVITS' weights (v4's tagged zip), coqui XTTS' files, F5-TTS' training
checkpoints (an ema_pytorch EMA beside the model), PhotoMaker's adapter, AnimateDiff motion modules."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json


def _vits_state(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A few of the VITS synthesizer's names that RVC, so-vits-svc and GPT-SoVITS share (enc_p, dec, flow, emb_g),
    the HiFi-GAN upsampler weight-normed (weight_g / weight_v)."""
    torch.manual_seed(0)
    state = {"enc_p.emb_phone.weight": torch.randn(16, 8),
             "enc_p.encoder.attn_layers.0.conv_q.weight": torch.randn(16, 16, 1),
             "dec.conv_pre.weight": torch.randn(16, 16, 7), "dec.ups.0.weight_g": torch.ones(16, 1, 1),
             "dec.ups.0.weight_v": torch.randn(16, 8, 16),
             "flow.flows.0.enc.in_layers.0.weight": torch.randn(32, 16, 5), "emb_g.weight": torch.randn(4, 16)}
    return {name: value.to(dtype) for name, value in state.items()}


def _gpt_sovits_v4(path: Path, tag: bytes = b"04") -> dict[str, torch.Tensor]:
    """A GPT-SoVITS v3 / v4 / v2Pro SoVITS weight file as its process_ckpt's my_save2 writes it: torch.save of
    {"weight": the fp16 state dict, "config": the hyperparameters, "info": ...} into memory, then the archive's
    first two bytes ("PK") replaced by the model version's two digits before it is written."""
    weight = _vits_state(torch.float16)
    buffer = io.BytesIO()
    torch.save({"weight": weight, "config": {"data": {"sampling_rate": 32000}, "model": {"version": "v4"}},
                "info": "voice_e8_s200"}, buffer)
    path.write_bytes(tag + buffer.getvalue()[2:])
    return weight


def test_a_gpt_sovits_v4_weight_file_is_named_not_called_no_pytorch_pickle(tmp_path: Path) -> None:
    """GPT-SoVITS' v4 weights were "not a safetensors file nor a PyTorch pickle", which read as a broken download:
    the file is a torch.save archive but for its first two bytes, which GPT-SoVITS' loader puts back. A zip whose
    first bytes are digits but whose first record is no torch pickle is not named so."""
    path = tmp_path / "voice_e8_s200.pth"
    weight = _gpt_sovits_v4(path)
    for command in ("inspect", "convert"):
        args = (command, str(path)) + (("-o", str(tmp_path / "out.safetensors")) if command == "convert" else ())
        result = run_cli(*args)
        assert result.exit_code == 2, result.output
        line = result.stderr.strip()
        assert line.count("\n") == 0 and "Traceback" not in result.output
        assert "first two bytes are '04' instead of the zip signature 'PK'" in line and "GPT-SoVITS" in line, line
        assert "load_sovits_new" in line and "nor a PyTorch pickle" not in line, line
    assert not (tmp_path / "out.safetensors").exists()
    # What the message says: with "PK" back, it is a torch.save file read like any other.
    fixed = tmp_path / "fixed.pth"
    fixed.write_bytes(b"PK" + path.read_bytes()[2:])
    code, data = run_json("inspect", str(fixed))
    assert code == 0 and data["nested_key"] == "weight" and data["num_tensors"] == len(weight)
    assert data["security"]["verdict"] == "safe", data["security"]
    # Digits before another zip's record: not GPT-SoVITS'.
    import zipfile

    other = tmp_path / "other.pth"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("notes.txt", "hello")
    other.write_bytes(b"04" + other.read_bytes()[2:])
    result = run_cli("inspect", str(other))
    assert result.exit_code == 2 and "GPT-SoVITS" not in result.stderr, result.stderr


def _f5_tts_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """An F5-TTS training checkpoint as its Trainer.save_checkpoint writes model_<update>.pt: the raw model, the
    optimizer, the ema_pytorch EMA's state dict (initted, step, then the averaged CFM as ema_model.*), the scheduler
    and the update count."""
    raw = {"transformer.time_embed.time_mlp.0.weight": torch.full((16, 8), 1.0),
           "transformer.proj_out.weight": torch.full((8, 16), 1.0)}
    ema = {"initted": torch.tensor([True]), "step": torch.tensor(1200000)}
    ema |= {f"ema_model.{name}": value + 0.5 for name, value in raw.items()}
    torch.save({"model_state_dict": raw, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "ema_model_state_dict": ema, "scheduler_state_dict": {"last_epoch": 3}, "update": 1200000}, path)
    return raw, ema


def test_an_f5_tts_checkpoint_reads_the_ema_its_inference_loads(tmp_path: Path) -> None:
    """F5-TTS' inference (load_checkpoint, use_ema=True by default) loads ema_model_state_dict; model_state_dict
    only resumes training. model_state_dict was read (the first usual key), so convert wrote the raw weights that
    F5-TTS does not synthesize with, and nothing said the EMA was there but an entry among the others."""
    from safetensors.torch import load_file

    path = tmp_path / "model_1200000.pt"
    raw, ema = _f5_tts_checkpoint(path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "ema_model_state_dict" and data["num_tensors"] == len(ema), data
    assert any("an F5-TTS training checkpoint" in w and "ema_model_state_dict is read" in w
               and "--key model_state_dict" in w for w in data["warnings"]), data["warnings"]
    assert any(entry.startswith("model_state_dict (a state dict of 2 tensors") for entry in data["other_entries"])
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    written = load_file(out)
    assert set(written) == set(ema) and all(torch.equal(written[name], ema[name]) for name in ema)
    code, data = run_json("inspect", str(path), "--key", "model_state_dict")
    assert code == 0 and data["nested_key"] == "model_state_dict" and not any("F5-TTS" in w for w in data["warnings"])
    # An EMA without ema_pytorch's initted / step (another trainer's) is not taken for F5-TTS'.
    other = tmp_path / "other.pt"
    torch.save({"model_state_dict": raw, "ema_model_state_dict": {f"ema_model.{k}": v for k, v in raw.items()}}, other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and data["nested_key"] == "model_state_dict" and not any("F5-TTS" in w for w in data["warnings"])


def _photomaker(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """PhotoMaker's photomaker-v1.bin: torch.save of {"id_encoder": the PhotoMakerIDEncoder (a CLIP vision tower
    and its fuse module), "lora_weights": the LoRA it applies to the SDXL U-Net, in diffusers' names}."""
    parts = {"id_encoder": {"vision_model.embeddings.class_embedding": torch.randn(16),
                            "fuse_module.mlp1.fc1.weight": torch.randn(16, 32)},
             "lora_weights": {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.lora_A.weight":
                              torch.randn(4, 16)}}
    torch.save(parts, path)
    return parts


def test_a_photomaker_adapter_reads_both_its_parts_as_its_loader_does(tmp_path: Path) -> None:
    """id_encoder was read alone, lora_weights listed among "other entries" and left out of convert: the converted
    file lacked the LoRA that load_photomaker_adapter loads beside the encoder. Both are read, under the prefixes a
    PhotoMaker .safetensors stores, and a flat .bin (which that loader indexes by part, and raises on) is warned
    about."""
    from safetensors.torch import load_file

    path = tmp_path / "photomaker-v1.bin"
    parts = _photomaker(path)
    flat = {f"{part}.{name}": value for part, state in parts.items() for name, value in state.items()}
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] is None and data["other_entries"] == [], data
    assert {t["name"] for t in data["tensors"]} == set(flat)
    assert any(w.startswith(f"{path.name}: a PhotoMaker adapter") and "load_photomaker_adapter" in w
               for w in data["warnings"]), data["warnings"]
    out = tmp_path / "photomaker-v1.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    written = load_file(out)
    assert set(written) == set(flat) and all(torch.equal(written[name], flat[name]) for name in flat)
    result = run_cli("convert", str(path), "-o", str(tmp_path / "flat.bin"))
    assert result.exit_code == 0 and "a PhotoMaker adapter written flat (id_encoder.*, lora_weights.*) to a .bin" \
        in result.stderr, result.stderr
    code, data = run_json("inspect", str(path), "--key", "lora_weights")
    assert code == 0 and data["num_tensors"] == 1 and not any("PhotoMaker" in w for w in data["warnings"])


def _animatediff_motion_module(path: Path) -> dict[str, torch.Tensor]:
    """A motion module as guoyww/AnimateDiff releases it (mm_sd_v15_v2.ckpt: torch.save of the motion modules'
    state dict alone): per U-Net block `motion_modules.N.temporal_transformer` with its norm, proj_in / proj_out and
    transformer_blocks.N holding attention_blocks.0 / .1 (each with its sinusoidal pos_encoder.pe buffer), norms.0 /
    .1, ff and ff_norm."""
    torch.manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    for block in ("down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0"):
        prefix = f"{block}.motion_modules.0.temporal_transformer."
        inner = prefix + "transformer_blocks.0."
        state |= {prefix + "norm.weight": torch.ones(32), prefix + "proj_in.weight": torch.randn(32, 32),
                  inner + "attention_blocks.0.to_q.weight": torch.randn(32, 32),
                  inner + "attention_blocks.0.pos_encoder.pe": torch.randn(1, 32, 32),
                  inner + "attention_blocks.1.to_q.weight": torch.randn(32, 32),
                  inner + "attention_blocks.1.pos_encoder.pe": torch.randn(1, 32, 32),
                  inner + "norms.0.weight": torch.ones(32), inner + "norms.1.weight": torch.ones(32),
                  inner + "ff_norm.weight": torch.ones(32), inner + "ff.net.0.proj.weight": torch.randn(64, 32),
                  prefix + "proj_out.weight": torch.randn(32, 32)}
    torch.save(state, path)
    return state


def _as_motion_adapter(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under diffusers' MotionAdapter names (what its from_single_file converts them to): attn1 /
    attn2, norm1 / norm2 / norm3, no temporal_transformer level, and no pos_encoder.pe (diffusers computes it)."""
    renames = ((".norms.0", ".norm1"), (".norms.1", ".norm2"), (".ff_norm", ".norm3"),
               (".attention_blocks.0", ".attn1"), (".attention_blocks.1", ".attn2"), (".temporal_transformer", ""))
    converted = {}
    for name, value in state.items():
        if ".pos_encoder." in name:
            continue
        for old, new in renames:
            name = name.replace(old, new)
        converted[name] = value
    return converted


def test_an_animatediff_motion_module_against_diffusers_motion_adapter_names_the_converter(tmp_path: Path) -> None:
    """diff-keys of AnimateDiff's own mm_sd_v15_v2.ckpt against diffusers' MotionAdapter offered one rename
    (`temporal_transformer.` -> `.`) that leaves attention_blocks / norms / ff_norm unknown, with no word of what
    the file is or that MotionAdapter.from_single_file converts it (and drops the pe tables on purpose)."""
    from safetensors.torch import save_file

    original = tmp_path / "mm_sd_v15_v2.ckpt"
    state = _animatediff_motion_module(original)
    adapter = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(_as_motion_adapter(state), adapter)
    code, data = run_json("diff-keys", str(original), str(adapter))
    assert code != 2 and data["matched"] == 0, data
    notes = [note for note in data["notes"] if "AnimateDiff's own motion-module layout" in note]
    assert len(notes) == 1 and "MotionAdapter.from_single_file(A)" in notes[0] and "pos_encoder.pe" in notes[0]
    # The same file against itself, or a motion module with the same names: nothing to convert.
    code, data = run_json("diff-keys", str(original), str(original))
    assert code == 0 and not any("AnimateDiff" in note for note in data["notes"]), data["notes"]


def _faiss_ivf_flat(path: Path, dimension: int = 768, count: int = 1500) -> None:
    """An IndexIVFFlat as faiss.write_index writes it (RVC's train_index: `IVF<n>,Flat` over the training voice's
    HuBERT features, saved as added_IVF<n>_Flat_nprobe_1_<name>_v2.index): the fourcc "IwFl", the header (d, ntotal,
    two dummies, is_trained, metric), then the IVF fields; the rest is left as zeros here."""
    import struct

    path.write_bytes(b"IwFl" + struct.pack("<iqqq?i", dimension, count, 1 << 20, 1 << 20, True, 1) + bytes(64))


def test_an_rvc_faiss_index_is_named_not_called_a_tensorflow_checkpoint_index(tmp_path: Path) -> None:
    """RVC's added_*.index beside a voice model is a faiss index; by its .index suffix it was "a TensorFlow
    checkpoint index" with tf.train.load_checkpoint as what reads it. Its class code, dimension and count are said;
    an .index file that holds no faiss header is still TensorFlow's."""
    index = tmp_path / "added_IVF256_Flat_nprobe_1_voice_v2.index"
    _faiss_ivf_flat(index)
    result = run_cli("inspect", str(index))
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.stderr.strip()
    assert "a faiss index (IwFl: 1,500 vectors of 768 dimensions), read by faiss.read_index" in line, line
    assert "TensorFlow" not in line and line.count("\n") == 0, line
    tf_index = tmp_path / "model.ckpt-100.index"
    tf_index.write_bytes(b"\x00\x00\x00\x00" + bytes(60))
    result = run_cli("inspect", str(tf_index))
    assert result.exit_code == 2 and "a TensorFlow checkpoint index" in result.stderr, result.stderr
    # The voice model beside it is still the folder's weights.
    torch.save({"weight": _vits_state(torch.float16), "config": [1025, 32], "info": "300epoch", "sr": "40k",
                "f0": 1, "version": "v2"}, tmp_path / "voice.pth")
    code, data = run_json("inspect", str(tmp_path / "voice.pth"))
    assert code == 0 and data["nested_key"] == "weight" and data["num_tensors"] == 7


def test_rvc_and_gpt_sovits_voice_models_are_named_not_called_training_checkpoints(tmp_path: Path) -> None:
    """An RVC voice model (weight, config, info, sr, f0, version) and GPT-SoVITS' SoVITS .pth and GPT .ckpt (weight,
    config, info) are the released weights, loaded into the synthesizer their config builds; inspect called each
    "a training checkpoint" and named no tool. so-vits-svc's G_*.pth (model beside iteration, optimizer,
    learning_rate) is one, and stays so."""
    rvc = tmp_path / "voice.pth"
    torch.save({"weight": _vits_state(torch.float16), "config": [1025, 32, 192, 192, 768, 2, 6, 3, 0, "1", 40000],
                "info": "300epoch", "sr": "40k", "f0": 1, "version": "v2"}, rvc)
    sovits = tmp_path / "voice_e8_s200.pth"
    torch.save({"weight": _vits_state(torch.float16), "config": {"model": {"version": "v2"}}, "info": "e8"}, sovits)
    gpt = tmp_path / "voice-e15.ckpt"
    torch.save({"weight": {"model.ar_text_embedding.word_embeddings.weight": torch.randn(32, 16).half()},
                "config": {"model": {"hidden_dim": 16}}, "info": "GPT-e15"}, gpt)
    expected = {rvc: "an RVC voice model", sovits: "a GPT-SoVITS SoVITS model", gpt: "a GPT-SoVITS GPT"}
    for path, words in expected.items():
        code, data = run_json("inspect", str(path))
        assert code == 0 and data["nested_key"] == "weight", data
        assert any(w.startswith(f"{path.name}: {words}") and "not a training checkpoint" in w
                   for w in data["warnings"]), data["warnings"]
        result = run_cli("inspect", str(path))
        assert result.exit_code == 0 and "a training checkpoint)" not in result.stdout, result.stdout
        assert "the model's weights beside other entries" in " ".join(result.stdout.split()), result.stdout
    note = next(w for w in run_json("inspect", str(rvc))[1]["warnings"] if "RVC" in w)
    assert "version 'v2', sr '40k', f0 1" in note and "faiss index" in note, note
    generator = tmp_path / "G_10000.pth"
    torch.save({"model": _vits_state(), "iteration": 10000, "optimizer": {"state": {}, "param_groups": []},
                "learning_rate": 1e-4}, generator)
    code, data = run_json("inspect", str(generator))
    assert code == 0 and data["nested_key"] == "model" and not any("RVC" in w or "SoVITS" in w
                                                                   for w in data["warnings"])
    assert "a training checkpoint" in " ".join(run_cli("inspect", str(generator)).stdout.split())


def test_an_f5_tts_release_file_says_its_ema_names_and_counters(tmp_path: Path) -> None:
    """F5-TTS' released model_*.safetensors (and a pruned model_*.pt: {"ema_model_state_dict": ...}) hold the
    ema_pytorch EMA's state: initted and step beside ema_model.*. Nothing said what the prefix and the two counters
    are, nor that F5-TTS strips and drops them when it loads the file. The full training checkpoint says it once."""
    from safetensors.torch import save_file

    _, ema = _f5_tts_checkpoint(tmp_path / "model_1200000.pt")
    release = tmp_path / "model_1250000.safetensors"
    save_file(ema, release)
    pruned = tmp_path / "model_1250000.pt"
    torch.save({"ema_model_state_dict": ema}, pruned)
    for path in (release, pruned):
        code, data = run_json("inspect", str(path))
        assert code == 0 and data["num_tensors"] == len(ema), data
        notes = [w for w in data["warnings"] if "an ema_pytorch EMA's state" in w]
        assert len(notes) == 1 and notes[0].startswith(f"{path.name}: ") and "strips the ema_model. prefix" in notes[0]
    code, data = run_json("inspect", str(tmp_path / "model_1200000.pt"))
    assert code == 0 and sum("ema_pytorch" in w for w in data["warnings"]) == 1, data["warnings"]
    # Another file with a tensor named step (an optimizer's, a scheduler's) is not called an EMA.
    other = tmp_path / "other.safetensors"
    save_file({"initted": torch.tensor([True]), "step": torch.tensor(3), "encoder.weight": torch.ones(2, 2)}, other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and not any("ema_pytorch" in w for w in data["warnings"]), data["warnings"]
