"""Review 13: the plan-devices warnings of fix list 10 (a config dtype "auto", --dtype over a pre-quantized
checkpoint), the --reserve message, and the path suggestions over a large folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_json

# A tiny Llama config: built on the meta device, no weights needed.
LLAMA = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 64, "architectures": ["LlamaForCausalLM"]}


def _config_folder(tmp_path: Path, name: str, **fields: object) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**LLAMA, **fields}))
    return folder


def test_torch_dtype_auto_beside_a_real_dtype_is_not_warned_about(tmp_path: Path) -> None:
    """transformers reads `torch_dtype` only where `dtype` is unset: "torch_dtype": "auto" beside "dtype":
    "bfloat16" loads, yet the warning said transformers cannot read it; "dtype": "auto" beside a real
    "torch_dtype" does raise, and is warned about by its own field."""
    import transformers

    loads = _config_folder(tmp_path, "loads", dtype="bfloat16", torch_dtype="auto")
    assert str(transformers.AutoConfig.from_pretrained(loads).dtype) == "torch.bfloat16"
    code, data = run_json("plan-devices", loads, "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "bf16"
    assert not [line for line in data["warnings"] if '"auto"' in line]

    raises = _config_folder(tmp_path, "raises", dtype="auto", torch_dtype="bfloat16")
    with pytest.raises(AttributeError, match="has no attribute 'auto'"):
        transformers.AutoConfig.from_pretrained(raises)
    code, data = run_json("plan-devices", raises, "--gpu", "1GB")
    assert code == 0
    auto = [line for line in data["warnings"] if '"auto"' in line]
    assert len(auto) == 1 and auto[0].startswith('config.json sets "dtype": "auto", which transformers ')


def _compressed_tensors(**extra: object) -> dict[str, object]:
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 16}}},
            **extra}


@pytest.mark.parametrize("extra", [{"dequantize": True}, {"run_compressed": False},
                                   {"quantization_status": "frozen"}])
def test_dtype_on_a_compressed_tensors_checkpoint_loaded_dense_is_not_said_to_stay_packed(
        tmp_path: Path, extra: dict[str, object]) -> None:
    """compressed-tensors with `dequantize: true` (or `run_compressed: false`) in config.json is dequantized by
    from_pretrained to the dtype it is given, and a checkpoint never compressed stays dense: --dtype bf16 plans
    what loads, but the warning said from_pretrained keeps the weights packed and that the plan over-sizes them."""
    folder = _config_folder(tmp_path, "ct", torch_dtype="bfloat16", quantization_config=_compressed_tensors(**extra))
    code, data = run_json("plan-devices", folder, "--gpu", "1GB", "--dtype", "bf16")
    assert code == 0 and data["dtype"] == "bf16"
    assert not [line for line in data["warnings"] if "keeps them packed" in line]


def test_dtype_on_a_metal_checkpoint_with_dequantize_is_not_said_to_stay_packed(tmp_path: Path) -> None:
    """transformers' MetalConfig reads `dequantize: true` too: the weights load dense at the --dtype given."""
    metal = {"quant_method": "metal", "bits": 4, "group_size": 64}
    folder = _config_folder(tmp_path, "metal", torch_dtype="bfloat16",
                            quantization_config={**metal, "dequantize": True})
    code, data = run_json("plan-devices", folder, "--gpu", "1GB", "--dtype", "bf16")
    assert code == 0 and data["dtype"] == "bf16"
    assert not [line for line in data["warnings"] if "keeps them packed" in line]
    packed = _config_folder(tmp_path, "packed", torch_dtype="bfloat16", quantization_config=metal)
    assert [line for line in run_json("plan-devices", packed, "--gpu", "1GB", "--dtype", "bf16")[1]["warnings"]
            if "keeps them packed" in line]


def test_dtype_on_a_packed_compressed_tensors_checkpoint_still_warns(tmp_path: Path) -> None:
    """The packed case (status "compressed", no dequantize) keeps its warning."""
    folder = _config_folder(tmp_path, "ct", torch_dtype="bfloat16", quantization_config=_compressed_tensors())
    code, data = run_json("plan-devices", folder, "--gpu", "1GB", "--dtype", "bf16")
    assert code == 0
    assert [line for line in data["warnings"] if line.startswith(
        "--dtype bf16 on a pre-quantized checkpoint (compressed-tensors, 4-bit) sizes the dense weights")]


def test_path_suggestions_do_not_hold_the_whole_listing(tmp_path: Path) -> None:
    """close_local_paths listed the folder with Path.iterdir, which before Python 3.13 is os.listdir: every name
    read and held before the 1,000,000 cap (a folder of millions on a network mount, all of it in memory). Names
    the length filter drops are now never held: a folder of 20,000 long names costs no list of them."""
    import os
    import tracemalloc

    from weightdoctor.checkpoint.hub import close_local_paths

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(20000):
        os.close(os.open(folder / f"frame-{index:07d}-of-the-long-recording-session.jpg", os.O_CREAT | os.O_WRONLY))
    (folder / "checkpoint").mkdir()
    tracemalloc.start()
    try:
        close = close_local_paths(str(folder / "checkpint"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert close == [str(folder / "checkpoint")]
    assert peak < 500_000  # the 20,000 names alone, as a list of str, hold over 2 MB
    # A folder without read permission has no suggestion, and no traceback.
    folder.chmod(0)
    try:
        assert close_local_paths(str(folder / "checkpint")) == [] or os.geteuid() == 0
    finally:
        folder.chmod(0o755)


def test_a_cached_mistral_native_repo_without_weights_says_they_were_never_downloaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mistral's native layout has params.json (its model config) beside consolidated.safetensors: with only
    params.json and the tokenizer fetched, the line said the repo "may have no weights" and lacked "a model
    config", which it has. Without any model config it reads "neither a model config nor weights"."""
    from fixtures.hub_cache import commit_of, write_snapshot

    cache = tmp_path / "hub"
    write_snapshot(cache, "acme/native", commit_of("native"),
                   {"params.json": b'{"dim": 16, "n_layers": 1}', "tekken.json": b"{}"})
    write_snapshot(cache, "acme/tokenizer", commit_of("tokenizer"), {"tokenizer.json": b"{}"})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tests.helpers import run_cli

    line = run_cli("inspect", "acme/native").stderr.strip()
    assert ("; the snapshot holds params.json, tekken.json only: the weights were never downloaded; fetch them "
            "with `hf download acme/native`") in line
    line = run_cli("inspect", "acme/tokenizer").stderr.strip()
    assert "; the snapshot holds tokenizer.json only, neither a model config nor weights: the repo may" in line


def test_dtype_auto_on_a_gptq_checkpoint_names_the_weights_dtype_not_float16(tmp_path: Path) -> None:
    """Planned at int4, the fix said `set "dtype" to "float16"` (the placeholder dtype of the int4 plan) for a
    GPTQ checkpoint whose embeddings, norms and lm_head are bf16: the value to set is the weights' bfloat16."""
    import torch
    from safetensors.torch import load_file, save_file

    from tests.test_plan_devices_prequantized import write_gptq_llama

    folder = tmp_path / "gptq"
    write_gptq_llama(folder)
    for file in folder.glob("*.safetensors"):
        tensors = load_file(file)
        save_file({name: t.to(torch.bfloat16) if t.dtype == torch.float16 else t for name, t in tensors.items()},
                  file)
    config = json.loads((folder / "config.json").read_text())
    config.pop("torch_dtype")
    config["dtype"] = "auto"
    (folder / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "int4"
    auto = [line for line in data["warnings"] if '"auto"' in line]
    assert len(auto) == 1 and auto[0].endswith('planned at int4; set "dtype" to "bfloat16" in config.json (or remove '
                                               'it) to load it')


@pytest.mark.parametrize(("extra", "why"), [
    ({"dequantize": True}, "its compressed-tensors quantization_config sets dequantize: true"),
    ({"quantization_status": "frozen"},
     "its compressed-tensors quantization_status is 'frozen', not \"compressed\": the weights are stored dense"),
])
def test_a_compressed_tensors_checkpoint_loaded_dense_is_planned_dense_by_default(
        tmp_path: Path, extra: dict[str, object], why: str) -> None:
    """Without --dtype the same checkpoints were planned at int4, a quarter of the dense Linear weights that
    from_pretrained holds once it dequantizes them: they are planned at the config's floating dtype."""
    folder = _config_folder(tmp_path, "ct", torch_dtype="bfloat16", quantization_config=_compressed_tensors(**extra))
    code, data = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "bf16"
    assert (f"the config quantizes the weights (compressed-tensors), but {why}: transformers loads them dense, at the "
            "floating dtype planned here") in data["warnings"]
    code, packed = run_json("plan-devices", _config_folder(tmp_path, "packed", torch_dtype="bfloat16",
                                                           quantization_config=_compressed_tensors()), "--gpu", "1GB")
    assert code == 0 and packed["dtype"] == "int4" and packed["weights_bytes"] < data["weights_bytes"]
