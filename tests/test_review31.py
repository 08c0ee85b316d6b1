"""Review of the voice / diffusion-tool round (thirdparty16): which weights an ema_pytorch EMA beside the model makes
every command read, and what a faiss index's header is said to hold."""

from __future__ import annotations

import struct
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json


def _ema_pytorch_state(raw: dict[str, torch.Tensor], online: bool = False) -> dict[str, torch.Tensor]:
    """ema_pytorch's EMA.state_dict(): initted and step, the averaged copy as ema_model.*, and, with its default
    include_online_model=True, the trained model itself again as online_model.*."""
    ema = {"initted": torch.tensor([True]), "step": torch.tensor(10)}
    ema |= {f"ema_model.{name}": value + 0.5 for name, value in raw.items()}
    if online:
        ema |= {f"online_model.{name}": value for name, value in raw.items()}
    return ema


def test_an_e2_tts_pytorch_checkpoint_reads_the_raw_weights_its_loader_reads(tmp_path: Path) -> None:
    """lucidrains' e2-tts-pytorch saves the dict F5-TTS' trainer later copied (model_state_dict, an ema_pytorch EMA
    as ema_model_state_dict, step), but its E2TTS (proj_in, to_pred, transformer.layers: no transformer.proj_out) has
    no inference loader, and its load_checkpoint puts model_state_dict into the model. Every command read the EMA
    and called the file "an F5-TTS training checkpoint"; convert wrote the EMA's prefixed names and its counters."""
    from safetensors.torch import load_file

    raw = {"proj_in.weight": torch.ones(4, 4), "transformer.layers.0.1.to_qkv.weight": torch.ones(12, 4),
           "to_pred.weight": torch.ones(4, 4)}
    path = tmp_path / "e2.pt"
    torch.save({"model_state_dict": raw, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "ema_model_state_dict": _ema_pytorch_state(raw), "scheduler_state_dict": {"last_epoch": 3},
                "step": 10}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "model_state_dict" and data["num_tensors"] == len(raw), data
    assert not any("F5-TTS" in w for w in data["warnings"]), data["warnings"]
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert set(load_file(out)) == set(raw)
    # Asked for by name, the EMA is still read, and said to be ema_pytorch's state.
    code, data = run_json("inspect", str(path), "--key", "ema_model_state_dict")
    assert code == 0 and data["nested_key"] == "ema_model_state_dict" and data["num_tensors"] == len(raw) + 2, data
    assert any("an ema_pytorch EMA's state" in w for w in data["warnings"]), data["warnings"]


def test_an_ema_saved_with_its_online_model_is_not_read_as_f5_tts_averaged_weights(tmp_path: Path) -> None:
    """An EMA saved with ema_pytorch's default include_online_model=True holds the raw model a second time as
    online_model.*: read as F5-TTS' EMA it counted every weight twice. F5-TTS saves the averaged model alone."""
    raw = {"transformer.time_embed.time_mlp.0.weight": torch.ones(16, 8),
           "transformer.proj_out.weight": torch.ones(8, 16)}
    path = tmp_path / "model_100.pt"
    torch.save({"model_state_dict": raw, "ema_model_state_dict": _ema_pytorch_state(raw, online=True),
                "update": 100}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "model_state_dict" and data["num_tensors"] == len(raw), data
    assert not any("F5-TTS training checkpoint" in w for w in data["warnings"]), data["warnings"]
    # F5-TTS' own (the averaged CFM alone, its backbone's transformer.proj_out) still reads the EMA, and says how to
    # read the raw weights; --key model_state_dict is honoured.
    torch.save({"model_state_dict": raw, "ema_model_state_dict": _ema_pytorch_state(raw), "update": 100}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "ema_model_state_dict" and data["num_tensors"] == len(raw) + 2, data
    assert any("F5-TTS training checkpoint" in w and "--key model_state_dict" in w for w in data["warnings"])
    code, data = run_json("inspect", str(path), "--key", "model_state_dict")
    assert code == 0 and data["nested_key"] == "model_state_dict" and data["num_tensors"] == len(raw), data


def test_a_faiss_binary_index_says_its_vector_count(tmp_path: Path) -> None:
    """faiss' binary indexes (IndexBinaryFlat "IBxF", ...) write the code size (int32) between the dimension, in
    bits, and the count: read as a float index's header, 1,000 vectors of 256 bits were "4,294,967,296,032 vectors
    of 256 dimensions"."""
    path = tmp_path / "codes.index"
    path.write_bytes(b"IBxF" + struct.pack("<iiq", 256, 32, 1000) + b"\x01" + struct.pack("<i", 1) + bytes(64))
    result = run_cli("inspect", str(path))
    line = result.stderr.strip()
    assert result.exit_code == 2 and line.count("\n") == 0 and "Traceback" not in result.output, result.output
    assert "a faiss index (IBxF: 1,000 binary vectors of 256 bits)" in line, line
    # A float index's header is read as before.
    path.write_bytes(b"IwFl" + struct.pack("<iq", 768, 1500) + bytes(64))
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "a faiss index (IwFl: 1,500 vectors of 768 dimensions)" in result.stderr


def test_a_photomaker_adapter_stored_flat_in_a_pickle_is_said_to_break_its_loader(tmp_path: Path) -> None:
    """convert warns when it writes PhotoMaker's id_encoder.* / lora_weights.* flat to a .bin (load_photomaker_adapter
    indexes a pickle's state_dict["id_encoder"]), but inspecting that very .bin said nothing, as it says of an
    IP-Adapter stored so. The two-part file itself reads together, and an IP-Adapter's note is unchanged."""
    parts = {"id_encoder": {"vision_model.embeddings.patch_embedding.weight": torch.ones(4, 3, 2, 2)},
             "lora_weights": {"unet.down_blocks.0.attn.to_k_lora.down.weight": torch.ones(2, 4)}}
    two_part = tmp_path / "photomaker-v1.bin"
    torch.save(parts, two_part)
    out = tmp_path / "flat.bin"
    result = run_cli("convert", str(two_part), "-o", str(out))
    assert result.exit_code == 0 and "a PhotoMaker adapter written flat" in " ".join(result.stderr.split())
    code, data = run_json("inspect", str(out))
    assert code == 0 and data["num_tensors"] == 2, data
    assert any("a PhotoMaker adapter stored flat" in w and "load_photomaker_adapter" in w
               for w in data["warnings"]), data["warnings"]
    code, data = run_json("inspect", str(two_part))
    assert code == 0 and any(w.startswith("a PhotoMaker adapter (its ID encoder") or ": a PhotoMaker adapter (its ID"
                             in w for w in data["warnings"]), data["warnings"]
    assert not any("stored flat" in w for w in data["warnings"])
    ip_adapter = tmp_path / "ip-adapter_sd15.bin"
    torch.save({"image_proj": {"proj.weight": torch.ones(4, 4)}, "ip_adapter": {"1.to_k_ip.weight": torch.ones(4, 4)}},
               ip_adapter)
    code, data = run_json("inspect", str(ip_adapter))
    assert code == 0 and any("an IP-Adapter file: its image_proj and ip_adapter state dicts are read together" in w
                             and "diffusers' load_ip_adapter reads too" in w for w in data["warnings"])
    assert not any("PhotoMaker" in w for w in data["warnings"])
