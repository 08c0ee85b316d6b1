"""Review of the review11 / ctensors merges: compressed-tensors mixed recipes, output paths under `~`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json
from tests.test_compressed_tensors9 import DENSE, LINEARS, _config, _dense_rest


def _int_weights(bits: int) -> dict:
    return {"num_bits": bits, "type": "int", "symmetric": True, "strategy": "channel"}


def _mixed(folder: Path, tensors: dict[str, torch.Tensor], attention: dict, mlp: dict) -> Path:
    """A mixed-precision compressed-tensors checkpoint: one group for attention, one for the MLP (group_0 first)."""
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_config({
        "quant_method": "compressed-tensors", "format": "mixed-precision", "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["re:.*self_attn.*"], **attention},
                          "group_1": {"targets": ["re:.*mlp.*"], **mlp}},
        "ignore": ["lm_head"]})))
    return folder


def test_a_marlin_24_mlp_beside_w8_attention_is_counted_at_its_own_groups_bits(tmp_path: Path) -> None:
    """W8A8 int attention (int8 `weight`) as group_0, a marlin-24 W4 MLP as group_1: the marlin layers were
    counted at the first group's 8 bits, half their weights (57,536 of 69,824)."""
    torch.manual_seed(0)
    tensors = _dense_rest()
    for name, (rows, cols) in LINEARS.items():
        prefix = f"model.layers.0.{name}."
        if name.startswith("self_attn"):
            tensors[prefix + "weight"] = torch.randint(-128, 127, (rows, cols), dtype=torch.int8)
            tensors[prefix + "weight_scale"] = (torch.rand(rows, 1) * 0.01).bfloat16()
        else:  # two values of four kept, eight 4-bit ones an int32
            tensors[prefix + "weight_packed"] = torch.randint(-2**31, 2**31 - 1, (cols // 32, rows * 2),
                                                              dtype=torch.int32)
            tensors[prefix + "scale_packed"] = (torch.rand(1, rows) * 0.01).half()
            tensors[prefix + "meta"] = torch.randint(-2**15, 2**15 - 1, (cols // 32, rows * 2), dtype=torch.int16)
    folder = _mixed(tmp_path / "mixed", tensors, {"format": "int-quantized", "weights": _int_weights(8)},
                    {"format": "marlin-24", "weights": _int_weights(4)})
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    assert (data["quantized"]["parameters"], data["quantized"]["side_tensors"]) == (DENSE, 4 + 2 * 3), data


def test_an_nvfp4_mlp_beside_fp8_attention_is_counted_at_four_bits(tmp_path: Path) -> None:
    """FP8 attention (float8 `weight`) as group_0, an NVFP4 MLP (uint8 `weight_packed`, two values a byte) as
    group_1: each byte was counted as one weight, at the first group's 8 bits (57,536 of 69,824)."""
    torch.manual_seed(0)
    tensors = _dense_rest()
    for name, (rows, cols) in LINEARS.items():
        prefix = f"model.layers.0.{name}."
        if name.startswith("self_attn"):
            tensors[prefix + "weight"] = (torch.randn(rows, cols) * 0.02).to(torch.float8_e4m3fn)
            tensors[prefix + "weight_scale"] = (torch.rand(rows, 1) * 0.01).bfloat16()
        else:
            tensors[prefix + "weight_packed"] = torch.randint(0, 255, (rows, cols // 2), dtype=torch.uint8)
            tensors[prefix + "weight_scale"] = torch.rand(rows, cols // 16).to(torch.float8_e4m3fn)
            tensors[prefix + "weight_global_scale"] = torch.rand(1)
    folder = _mixed(tmp_path / "mixed", tensors,
                    {"format": "float-quantized", "weights": {"num_bits": 8, "type": "float", "strategy": "channel"}},
                    {"format": "nvfp4-pack-quantized",
                     "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}})
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    assert data["quantized"]["parameters"] == DENSE, data["quantized"]


def test_an_output_under_a_bare_tilde_with_no_home_is_not_called_an_unknown_user(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o ~/out` with HOME unset and the user not in the password database (a container's arbitrary uid): the
    path cannot be expanded, and the refusal said "~ names no user of this machine" (an empty user name)."""
    import pwd

    from weightdoctor.errors import UsageError
    from weightdoctor.paths import expand_output

    monkeypatch.delenv("HOME", raising=False)

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(UsageError) as refused:
        expand_output("~/out")
    assert "names no user" not in str(refused.value) and "HOME is not set" in str(refused.value), refused.value
    # A HOME still expands `~` alone and `~/x` for the current user.
    monkeypatch.setenv("HOME", str(tmp_path))
    assert (expand_output("~"), expand_output("~/x")) == (tmp_path, tmp_path / "x")
