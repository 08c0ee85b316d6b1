"""review63: plan5's plan-devices changes checked against what transformers 5.25 / accelerate really do."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import run_cli

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 8,
         "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 688, "vocab_size": 1000,
         "max_position_embeddings": 2048}

# Maps as dispatch_model receives them (only the order of the devices counts): the GPUs before the CPU, as an auto
# map names them; the CPU first; 16 GPUs with the CPU first and cuda:0 last (the set difference copies that set).
MAPS: list[list[int | str]] = [
    [3, 3, "cpu", "cpu", 11, 11],
    [11, "cpu", 3],
    [3, 11],
    ["cpu", 3, 11],
    [1, "cpu", 8],
    ["cpu", *range(1, 16), 0, "disk"],
    ["disk", *range(2, 14), "cpu", 1, 0],
]


def _firsts_by_hash_seed(seeds: list[int]) -> list[list[int]]:
    """accelerate's own pick (`list(devices - {"cpu", "disk"})[0]`, its dispatch_model's main_device) for each map of
    MAPS, in a fresh Python for each PYTHONHASHSEED: what a run of from_pretrained can get."""
    import accelerate.big_modeling

    source = inspect.getsource(accelerate.big_modeling.dispatch_model)
    assert 'non_offloaded_devices = devices - {"cpu", "disk"}' in source
    assert "main_device = list(non_offloaded_devices)[0]" in source
    probe = ("import json, sys\nmaps = json.loads(sys.argv[1])\n"
             "print(json.dumps([list(set(m) - {'cpu', 'disk'})[0] for m in maps]))")
    picks: list[list[int]] = [[] for _ in MAPS]
    for seed in seeds:
        done = subprocess.run([sys.executable, "-c", probe, json.dumps(MAPS)], capture_output=True, text=True,
                              check=True, env={"PYTHONHASHSEED": str(seed)})
        for found, first in zip(picks, json.loads(done.stdout), strict=True):
            if first not in found:
                found.append(first)
    return picks


def test_main_gpus_says_the_gpus_dispatch_model_takes_in_some_run_and_no_other() -> None:
    """plan5's `main_gpus` tried orders of the GPUs alone: a map naming cuda:3 before the CPU and cuda:11 was said
    to run its offloaded modules on "cuda:3 or cuda:11 from run to run" (it is cuda:3 in every run: the ints are
    laid out before "cpu" is met), and a map of 16 GPUs naming the CPU first and cuda:0 last was said to run them on
    cuda:0 alone, where with some hashes of "cpu" it is cuda:1 (the string takes cuda:0's slot)."""
    from weightdoctor.plan_devices import main_gpus

    # seeds 3, 106, 124 and 550 lay "cpu" or "disk" where they change the first GPU of the last maps (found by a
    # search of seeds 0 to 3400 on this Python, 3.11)
    seen = _firsts_by_hash_seed([*range(24), 106, 124, 550])
    for values, picked in zip(MAPS, seen, strict=True):
        said = main_gpus({f"module.{i}": device for i, device in enumerate(values)})
        assert set(picked) <= set(said), (values, said, picked)
        if sys.version_info[:2] == (3, 11):  # the seeds above found on it: every GPU said is seen in some run
            assert sorted(said) == sorted(picked), (values, said, picked)


def test_a_map_naming_its_first_gpu_before_the_cpu_is_said_to_run_offloaded_modules_on_it_alone(
        tmp_path: Path) -> None:
    """plan5's own map (cuda:3, the CPU, then cuda:11) runs its offloaded layers on cuda:3 in every run: "copied to
    cuda:3 or cuda:11 (whichever ..., from run to run)" was a false sentence."""
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA))
    mapping: dict[str, int | str] = {
        "model.embed_tokens": 3, **{f"model.layers.{i}": 3 if i < 4 else "cpu" if i < 6 else 11 for i in range(8)},
        "model.norm": 11, "model.rotary_emb": 11, "lm_head": 11}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    gpus = [arg for size in ["10MB"] * 3 + ["40MB"] + ["10MB"] * 7 + ["40MB"] for arg in ("--gpu", size)]
    result = run_cli("plan-devices", str(folder), *gpus, "--cpu", "1GB", "--dtype", "fp16", "--kv-cache",
                     "--seq-len", "4096", "--map", str(tmp_path / "map.json"))
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "3.16 MB of weights are offloaded and copied to cuda:3 as each module runs" in text, text
    assert "cuda:11 (whichever" not in text and "from run to run" not in text, text


def test_bitnet_on_the_cpu_and_a_gpu_is_not_said_to_load_only_on_the_gpus(tmp_path: Path) -> None:
    """plan5 said a BitNet map holding the CPU "loads only with every module on the GPUs"; its quantizer's check
    (`validate_environment`, where CUDA is available) passes a map of one entry, the whole model on the CPU."""
    from unittest import mock

    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    settings = {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}
    quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(dict(settings)), pre_quantized=True)
    with mock.patch("torch.cuda.is_available", return_value=True):
        quantizer.validate_environment(device_map={"": "cpu"})  # no ValueError
    folder = tmp_path / "bitnet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**LLAMA, "torch_dtype": "bfloat16",
                                                    "quantization_config": settings}))
    (tmp_path / "map.json").write_text(json.dumps({"model": 0, "lm_head": "cpu"}))
    result = run_cli("plan-devices", str(folder), "--gpu", "40MB", "--cpu", "1GB", "--map",
                     str(tmp_path / "map.json"), "--json")
    warnings = " ".join(json.loads(result.stdout)["warnings"])
    assert result.exit_code == 0 and "transformers' BitNet quantizer refuses a device map holding cpu" in warnings
    assert "only with every module on the GPUs" not in warnings, warnings
    assert ("from_pretrained loads it with every module on the GPUs, or the whole model on the CPU (device_map "
            '{"": "cpu"}: one entry passes its check)') in warnings, warnings
