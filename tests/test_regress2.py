"""Regressions found by diffing every command's output before and after the merges of 2026-12-05/06 (d0420b8..1b41df7)
on a corpus of small seeded checkpoints: what two merged changes did together that neither meant."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import run_cli, run_json


def _ldm_with_ema(path: Path) -> None:
    """An original (CompVis ldm) Stable Diffusion checkpoint saved with LitEma's copy of its UNet (model_ema.* named
    without the first part and dots), the VAE and the text encoder, in a training checkpoint's state_dict."""
    torch.manual_seed(0)
    unet = {f"model.diffusion_model.input_blocks.{i}.0.weight": torch.randn(64, 64) for i in range(3)}
    state = {**unet, "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3),
             "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.randn(100, 32),
             "model_ema.decay": torch.tensor(0.999), "model_ema.num_updates": torch.tensor(10, dtype=torch.int32)}
    for name, tensor in unet.items():
        state["model_ema." + "".join(name.split(".")[1:])] = tensor + 0.01
    torch.save({"state_dict": state, "global_step": 10}, path)


def test_the_ldm_ema_warning_speaks_the_units_the_gpu_was_typed_in(tmp_path: Path) -> None:
    """plan-devices --gpu 30KiB on a *-full-ema.ckpt: the report said "(model_ema, 48.01 KiB)" and its warning
    "model_ema (49.16 KB as planned) ... holds 49.16 KB less": the EMA warning (d33b759) came in beside the change that
    made every build-time warning speak the typed units (229859b), and was left decimal."""
    path = tmp_path / "sd-full-ema.ckpt"
    _ldm_with_ema(path)
    code, data = run_json("plan-devices", str(path), "--gpu", "30KiB", "--cpu", "1MiB")
    assert code == 0, data
    ema = data["devices"][0]["held_back"][0]["detail"]
    assert "(model_ema, 48.01 KiB)" in ema, ema
    said = [w for w in data["warnings"] if w.startswith("the UNet is stored twice")]
    assert len(said) == 1 and said[0].startswith("the UNet is stored twice: model_ema (48.01 KiB as planned)"), said
    assert "so a load holds 48.01 KiB less than planned" in said[0] and " KB" not in said[0], said
    result = run_cli("plan-devices", str(path), "--gpu", "30KiB", "--cpu", "1MiB")
    assert "model_ema (48.01 KiB as planned)" in result.stderr, result.stderr
    # Typed in decimal units, the warning stays decimal, as before.
    code, data = run_json("plan-devices", str(path), "--gpu", "30KB", "--cpu", "1MB")
    said = [w for w in data["warnings"] if w.startswith("the UNet is stored twice")]
    assert code == 0 and said[0].startswith("the UNet is stored twice: model_ema (49.16 KB as planned)"), said
