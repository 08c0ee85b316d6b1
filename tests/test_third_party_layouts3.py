"""Still more checkpoints as other libraries write them: BasicSR's params / params_ema, IP-Adapter's two state
dicts, mlx-lm's quantized weights, folders of TensorFlow / Flax / ONNX weights only."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import run_cli, run_json


def _sr_state(shift: float = 0.0) -> dict[str, torch.Tensor]:
    """RRDBNet's names, as BasicSR's archs save them (a few of them)."""
    return {"conv_first.weight": torch.full((8, 3, 3, 3), 0.1 + shift), "conv_first.bias": torch.zeros(8),
            "body.0.rdb1.conv1.weight": torch.full((8, 8, 3, 3), 0.2 + shift),
            "conv_last.weight": torch.ones(3, 8, 3, 3)}


def test_a_basicsr_checkpoint_reads_the_ema_weights_its_inference_loads(tmp_path: Path) -> None:
    """BasicSR (Real-ESRGAN, GFPGAN) saves {"params": ..., "params_ema": ...}; RealESRGANer loads params_ema when it
    is there. `params` was read, so convert wrote the training weights, not the ones the released model runs."""
    from safetensors.torch import load_file

    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params": _sr_state(), "params_ema": _sr_state(0.5)}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "params_ema", data
    assert data["other_entries"] == ["params (a state dict of 4 tensors: pick it with --key)"]
    assert any("params_ema is read" in w and "--key params" in w for w in data["warnings"]), data["warnings"]

    result = run_cli("convert", str(path), "-o", str(tmp_path / "x4.safetensors"))
    assert result.exit_code == 0, result.stderr
    assert "only the state dict at 'params_ema' is written" in " ".join(result.stderr.split())
    back = load_file(tmp_path / "x4.safetensors")
    assert torch.equal(back["conv_first.weight"], _sr_state(0.5)["conv_first.weight"])

    code, data = run_json("inspect", str(path), "--key", "params")
    assert code == 0 and data["nested_key"] == "params" and not data["warnings"], data


def test_an_ip_adapter_bin_is_read_whole_under_the_names_its_safetensors_has(tmp_path: Path) -> None:
    """IP-Adapter's .bin is {"image_proj": sd, "ip_adapter": sd}, both loaded by diffusers' load_ip_adapter. Only
    image_proj was read (as "a training checkpoint"): convert wrote half an adapter, plan-devices planned half."""
    from safetensors.torch import load_file

    image_proj = {"proj.weight": torch.randn(64, 16), "proj.bias": torch.zeros(64), "norm.weight": torch.ones(16),
                  "norm.bias": torch.zeros(16)}
    ip_adapter = {"1.to_k_ip.weight": torch.randn(32, 16), "1.to_v_ip.weight": torch.randn(32, 16),
                  "3.to_k_ip.weight": torch.randn(32, 16), "3.to_v_ip.weight": torch.randn(32, 16)}
    path = tmp_path / "ip-adapter_sd15.bin"
    torch.save({"image_proj": image_proj, "ip_adapter": ip_adapter}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] is None and data["num_tensors"] == 8, data
    names = {t["name"] for t in data["tensors"]}
    assert {"image_proj.proj.weight", "ip_adapter.1.to_k_ip.weight"} <= names, names
    assert any("an IP-Adapter file" in w and "read together" in w for w in data["warnings"]), data["warnings"]

    result = run_cli("convert", str(path), "-o", str(tmp_path / "ip-adapter_sd15.safetensors"))
    assert result.exit_code == 0 and "only the state dict" not in result.stderr, result.stderr
    back = load_file(tmp_path / "ip-adapter_sd15.safetensors")
    expected = {**{f"image_proj.{k}": v for k, v in image_proj.items()},
                **{f"ip_adapter.{k}": v for k, v in ip_adapter.items()}}
    assert back.keys() == expected.keys() and all(torch.equal(back[k], v) for k, v in expected.items())

    code, data = run_json("inspect", str(path), "--key", "ip_adapter")
    assert code == 0 and data["nested_key"] == "ip_adapter" and data["num_tensors"] == 4, data
