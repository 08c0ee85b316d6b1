"""Round 20 of the common mistakes users make: an ML engineer's bad day with inspect, check-dtype and plan-devices.

Covers: a model whose class lists no `_no_split_modules` (MarianMTModel, as Helsinki-NLP's opus-mt models are;
Pegasus, DistilBERT, DeBERTa-v2, BioGPT alike), planned on several GPUs: transformers 5's from_pretrained(device_map=
"auto") then splits a layer between GPUs (`model.encoder.layers.0.self_attn` on cuda:0, its `fc1` on cuda:1; one
attention's k_proj and v_proj apart), whose forward raises a device mismatch on those GPUs, and plan-devices printed
that map without a word ("no-split (none)"); it now warns and names the `--no-split` classes that keep each layer
whole (the map they give is the one from_pretrained computes with them). A hand-written `--map` splitting a layer is
warned alike. A max_memory written as a dict writes its entries (`--gpu "0":"20GiB"`, which the shell hands over as
`0:20GiB`; `--max-memory {"0":"20GiB","cpu":"64GiB"}` unquoted, which brace expansion hands over as two words
`0:20GiB cpu:64GiB`) was "cannot parse size '0:20GiB': '0:20' is not a number", or an example that was not the
user's own sizes; it now gets the --gpu / --cpu options that say it.
check-dtype: a checkpoint with a mask constant (-1e9) and a scale (1e-9) beside its weights was told "keep them in
fp32 (...), 69.96 KB instead of 69.96 KB" (now in bytes where rounding says the two alike); a float64 checkpoint was
checked against fp16 and bf16 only, never fp32, its first cast (now a default target, as it was for sources stored
below 32 bits).
Checked and already right (oracle tests here): plan-devices for a 13B-class Llama config on `--gpu 24GB --gpu 24GB
--cpu 64GB`, with `--reserve`, at fp32 (CPU offload) and with `sequential`, equals from_pretrained's own map; a
tied-embedding model keeps lm_head with embed_tokens, and a `--map` that parts them is an error (from_pretrained fails
on that map: accelerate's offload index holds no lm_head.weight); inspect of a folder holding model.safetensors beside
pytorch_model.bin or beside a stale model.safetensors.index.json reads the safetensors, as from_pretrained loads it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import json_report, run_cli

_MARIAN = dict(vocab_size=500, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
               pad_token_id=499, decoder_start_token_id=499)
_THREE_SMALL_GPUS = ["--gpu", "250KB", "--gpu", "250KB", "--gpu", "250KB", "--cpu", "10MB"]
_THREE_SMALL_BUDGETS: dict[int | str, int] = {0: 250_000, 1: 250_000, 2: 250_000, "cpu": 10_000_000}


@pytest.fixture(scope="module")
def marian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded MarianMTModel (its class lists no _no_split_modules), save_pretrained'd."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("u20") / "marian"
    MarianMTModel(MarianConfig(**_MARIAN)).save_pretrained(folder)
    return folder


def _layers_split(device_map: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, set[Any]]:
    """Each numbered layer under `prefixes` whose entries name more than one device, with those devices."""
    split: dict[str, set[Any]] = {}
    for key, device in device_map.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                rest = key[len(prefix):].split(".")
                if len(rest) > 1:
                    split.setdefault(prefix + rest[0], set()).add(device)
    return {layer: devices for layer, devices in split.items() if len(devices) > 1}


def test_a_model_without_no_split_modules_split_across_gpus_is_warned_with_the_classes_that_keep_it(
        marian: Path) -> None:
    """Was: the map of from_pretrained (encoder.layers.0's self_attn on cuda:0, its fc1 on cuda:1) printed with
    no warning. The map itself stays from_pretrained's; the warning names the layer and the --no-split classes, and
    those pasted give the map from_pretrained computes with them, no layer split."""
    from fixtures.plan_devices import from_pretrained_device_map

    report = json_report("plan-devices", str(marian), *_THREE_SMALL_GPUS)
    assert report["no_split"] == []
    oracle = from_pretrained_device_map(marian, "auto", _THREE_SMALL_BUDGETS)
    assert report["device_map"] == oracle
    layers = ("model.encoder.layers.", "model.decoder.layers.")
    split = _layers_split(oracle, layers)
    assert split, "the budgets were meant to split a layer between GPUs"
    warned = [w for w in report["warnings"] if "_no_split_modules" in w]
    assert len(warned) == 1
    first = next(iter(split))
    assert f"MarianMTModel lists no _no_split_modules, so {first} runs its parts on cuda:" in warned[0]
    assert "device mismatch" in warned[0]
    advice = warned[0].split("; ")[-1]
    options = shlex.split(advice.split(" keeps each layer whole")[0])
    assert options == ["--no-split", "MarianEncoderLayer", "--no-split", "MarianDecoderLayer"]

    pasted = json_report("plan-devices", str(marian), *_THREE_SMALL_GPUS, *options)
    assert not [w for w in pasted["warnings"] if "_no_split_modules" in w or "splits a layer" in w]
    assert pasted["device_map"] == from_pretrained_device_map(marian, "auto", _THREE_SMALL_BUDGETS,
                                                              no_split=options[1::2])
    assert not _layers_split(pasted["device_map"], layers)


def test_a_layer_split_between_one_gpu_and_the_cpu_is_not_warned(marian: Path) -> None:
    """One GPU with CPU offload: accelerate runs the offloaded parts on that GPU (its main_device), so a layer split
    between cuda:0 and cpu runs whole there; nothing to warn. Nor on the CPU alone."""
    one_gpu = json_report("plan-devices", str(marian), "--gpu", "300KB", "--cpu", "10MB")
    split = _layers_split(one_gpu["device_map"], ("model.encoder.layers.", "model.decoder.layers."))
    assert {frozenset(devices) for devices in split.values()} == {frozenset({0, "cpu"})}
    cpu_alone = json_report("plan-devices", str(marian), "--cpu", "10MB")
    for report in (one_gpu, cpu_alone):
        assert not [w for w in report["warnings"] if "_no_split_modules" in w]


def test_a_hand_written_map_splitting_a_layer_is_warned(tmp_path: Path) -> None:
    """A --map running a Llama layer's attention on cuda:0 and its MLP on cuda:1 (its class is no-split, but a map
    written by hand is not planned): warned, the map otherwise valid."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                 max_position_embeddings=64)).save_pretrained(folder)
    whole = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.norm": 1,
             "model.rotary_emb": 1, "lm_head": 1}
    split = {**{k: v for k, v in whole.items() if k != "model.layers.0"},
             "model.layers.0.input_layernorm": 0, "model.layers.0.self_attn": 0,
             "model.layers.0.post_attention_layernorm": 1, "model.layers.0.mlp": 1}
    for name, device_map in (("whole", whole), ("split", split)):
        (tmp_path / f"{name}.json").write_text(json.dumps(device_map))
    kept = json_report("plan-devices", str(folder), "--map", str(tmp_path / "whole.json"), "--gpu", "1MB",
                       "--gpu", "1MB")
    assert not [w for w in kept["warnings"] if "splits a layer" in w]
    parted = json_report("plan-devices", str(folder), "--map", str(tmp_path / "split.json"), "--gpu", "1MB",
                         "--gpu", "1MB")
    assert parted["findings"] == []
    assert [w for w in parted["warnings"] if "splits a layer" in w] == [
        "the map splits a layer, so model.layers.0 runs its parts on cuda:0 and cuda:1: a layer adds and multiplies "
        "its parts' outputs (its residual, attention's query and key), which raises a device mismatch on those GPUs "
        "at run time; keep each layer in one entry of the map"]


@pytest.fixture(scope="module")
def llama_13b_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-2-13B-class config.json alone (5120 wide, 40 layers, 40 heads, fp16), in a folder with an empty
    model.safetensors, so from_pretrained's own map can be recorded beside plan-devices'."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("u20") / "llama-13b"
    folder.mkdir()
    config = json.loads((Path(__file__).resolve().parent.parent / "fixtures" / "configs" / "llama-2-70b" /
                         "config.json").read_text())
    config.update(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                  num_key_value_heads=40, max_position_embeddings=4096)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({}, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize(("typed", "meant"), [
    # `--gpu "0":"20GiB"` in a shell: the quotes go, `0:20GiB` comes
    (["--gpu", "0:20GiB"], ["--gpu", "20GiB"]),
    (["--gpu", '"0": "20GiB"'], ["--gpu", "20GiB"]),
    (["--gpu", "cuda:0:20GiB"], ["--gpu", "20GiB"]),
    (["--gpu", "24GB", "--cpu", "cpu:64GiB"], ["--cpu", "64GiB"]),
    # `--gpu {"0":"20GiB"}` unquoted
    (["--gpu", "{0:20GiB}"], ["--gpu", "20GiB"]),
    # `--max-memory {"0":"20GiB","1":"20GiB","cpu":"64GiB"}` unquoted: brace expansion makes three words of it
    (["--max-memory", "0:20GiB", "1:20GiB", "cpu:64GiB"], ["--gpu", "20GiB", "--gpu", "20GiB", "--cpu", "64GiB"]),
    (["--max-memory", "0:20GiB,1:20GiB,cpu:64GiB"], ["--gpu", "20GiB", "--gpu", "20GiB", "--cpu", "64GiB"]),
])
def test_max_memory_entries_written_as_a_dict_writes_them_get_the_options(llama_13b_config: Path, typed: list[str],
                                                                           meant: list[str]) -> None:
    """Was "cannot parse size '0:20GiB': '0:20' is not a number", and for the unquoted --max-memory an example
    (`--gpu 20GiB --gpu 20GiB --cpu 64GB`) that was not the sizes typed. The options printed, pasted, plan those
    sizes; from_pretrained with that very max_memory computes the same map."""
    from fixtures.plan_devices import from_pretrained_device_map

    result = run_cli("plan-devices", str(llama_13b_config), *typed)
    assert result.exit_code == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "not a number" not in line
    printed = shlex.split(line.split(" for RAM: ", 1)[1].split(" (see ")[0])
    assert printed == meant
    rerun = ["--gpu", "24GB"] + printed if typed[:2] == ["--gpu", "24GB"] else printed
    report = json_report("plan-devices", str(llama_13b_config), *rerun)
    gib = 2**30
    max_memory: dict[int | str, int] = {0: 20 * gib} if printed[:2] == ["--gpu", "20GiB"] else {0: 24 * 10**9}
    if printed.count("--gpu") == 2:
        max_memory[1] = 20 * gib
    if "--cpu" in printed:
        max_memory["cpu"] = 64 * gib
    assert [d["capacity_bytes"] for d in report["devices"] if d["device"] != "disk"] == list(max_memory.values())
    assert report["device_map"] == from_pretrained_device_map(llama_13b_config, "auto", max_memory)


def test_keeping_two_scalars_in_fp32_says_the_bytes_it_adds(tmp_path: Path) -> None:
    """A Llama state dict with a mask constant (-1e9: inf in fp16) and a scale (1e-9: 0 in fp16) stored beside its
    weights. Was "keep them in fp32 (...), 69.96 KB instead of 69.96 KB"; now both in bytes, 4 apart (two scalars at
    4 bytes, not 2), and the pasted convert writes exactly that many tensor bytes."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                         max_position_embeddings=64))
    tensors = {name: value.contiguous() for name, value in model.state_dict().items()}
    tensors["model.layers.0.self_attn.masked_bias"] = torch.tensor(-1e9)
    tensors["model.layers.0.self_attn.scale"] = torch.tensor(1e-9)
    source = tmp_path / "model.safetensors"
    save_file(tensors, str(source))
    report = json_report("check-dtype", str(source), "--target", "fp16")
    fp16 = report["targets"]["fp16"]
    assert fp16["verdict"] == "unsafe"
    assert fp16["keep_fp32_memory_bytes"] - fp16["memory_bytes"] == 4
    line = next(line for line in report["recommendation"]["lines"] if line.startswith("fp16 is unsafe"))
    assert f"{fp16['keep_fp32_memory_bytes']:,} bytes instead of {fp16['memory_bytes']:,} bytes" in line
    command = shlex.split(report["recommendation"]["commands"]["fp16"])
    output = tmp_path / "out.safetensors"
    command[command.index("-o") + 1] = str(output)
    assert run_cli(*command[1:]).exit_code == 0
    with safe_open(str(output), "pt") as written:
        stored = {name: written.get_tensor(name) for name in written.keys()}  # noqa: SIM118
    assert sum(t.numel() * t.element_size() for t in stored.values()) == fp16["keep_fp32_memory_bytes"]
    assert {n for n, t in stored.items() if t.dtype == torch.float32} == {"model.layers.0.self_attn.masked_bias",
                                                                           "model.layers.0.self_attn.scale"}


def test_a_float64_checkpoint_is_checked_against_fp32_by_default(tmp_path: Path) -> None:
    """A model built and saved in float64 (torch.set_default_dtype(torch.float64): values of 53 significant bits).
    Was: the default targets fp16 and bf16 only, and "smallest plain cast ...: bf16", its first cast (fp32, half the
    memory, what from_pretrained(dtype=torch.float32) loads) never checked. fp32 is now a default target, its counts
    those of `tensor.to(torch.float32)`, and --fail-on warn follows its verdict."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                             max_position_embeddings=64))
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(tmp_path / "f64")
    report = json_report("check-dtype", str(tmp_path / "f64"))
    assert list(report["targets"]) == ["fp16", "bf16", "fp32"]
    fp32 = report["targets"]["fp32"]
    stored = load_file(str(tmp_path / "f64" / "model.safetensors"))
    changed = sum(int((t != t.to(torch.float32).to(torch.float64)).sum()) for t in stored.values())
    assert fp32["verdict"] == "lossy" and fp32["changed"] == changed > 0
    assert run_cli("check-dtype", str(tmp_path / "f64"), "--fail-on", "warn").exit_code == 1


@pytest.mark.parametrize(("options", "max_memory", "kwargs", "strategy"), [
    ([], {0: 24 * 10**9, 1: 24 * 10**9, "cpu": 64 * 10**9}, {}, "auto"),
    (["--reserve", "4GB"], {0: 20 * 10**9, 1: 20 * 10**9, "cpu": 64 * 10**9}, {}, "auto"),
    (["--dtype", "fp32"], {0: 24 * 10**9, 1: 24 * 10**9, "cpu": 64 * 10**9}, {"dtype": "float32"}, "auto"),
    (["--strategy", "sequential", "--dtype", "bf16"], {0: 24 * 10**9, 1: 24 * 10**9, "cpu": 64 * 10**9},
     {"dtype": "bfloat16"}, "sequential"),
])
def test_a_13b_config_on_two_24gb_gpus_is_planned_as_from_pretrained_maps_it(
        llama_13b_config: Path, options: list[str], max_memory: dict[int | str, int], kwargs: dict[str, str],
        strategy: str) -> None:
    """Already right (an oracle test): `--gpu 24GB --gpu 24GB --cpu 64GB` for a 13B-class config, with --reserve
    (each GPU's budget less it), at fp32 (CPU offload) and sequential at bf16, is the map from_pretrained computes
    with that max_memory."""
    import torch

    from fixtures.plan_devices import from_pretrained_device_map

    report = json_report("plan-devices", str(llama_13b_config), "--gpu", "24GB", "--gpu", "24GB", "--cpu", "64GB",
                         *options)
    oracle = from_pretrained_device_map(llama_13b_config, strategy, max_memory,
                                        **{k: getattr(torch, v) for k, v in kwargs.items()})
    assert report["device_map"] == oracle
    assert report["verdict"] == ("needs-cpu-offload" if "cpu" in oracle.values() else "fits-on-gpus")
    assert report["num_params"] == 13_015_864_320  # Llama-2-13b's published count


def test_safetensors_beside_a_bin_or_a_stale_index_is_what_from_pretrained_loads(tmp_path: Path) -> None:
    """Already right (an oracle test): a folder holding model.safetensors beside a pytorch_model.bin of other
    weights, or beside a model.safetensors.index.json naming shards that are not there, is read from the
    safetensors (a warning names the file left unread), as from_pretrained loads it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=16)
    for kind in ("bin", "index"):
        folder = tmp_path / kind
        GPT2LMHeadModel(config).save_pretrained(folder)
        if kind == "bin":
            torch.save(GPT2LMHeadModel(config).state_dict(), folder / "pytorch_model.bin")
            left = "pytorch_model.bin"
        else:
            weight_map = {name: "model-00001-of-00002.safetensors" for name in GPT2LMHeadModel(config).state_dict()}
            (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
            left = "model.safetensors.index.json"
        report = json_report("inspect", str(folder))
        assert [f["path"].rsplit("/", 1)[-1] for f in report["files"] if f["role"] == "weights"] == \
            ["model.safetensors"]
        assert any(w.startswith(f"{left} is ignored: model.safetensors comes first") for w in report["warnings"])
        loaded = GPT2LMHeadModel.from_pretrained(folder).state_dict()
        stats = {t["name"]: t["stats"] for t in json_report("inspect", str(folder), "--stats", "--all")["tensors"]}
        assert set(stats) <= set(loaded) and len(stats) == 16
        for name, figures in stats.items():
            assert abs(loaded[name].double().mean().item() - figures["mean"]) < 1e-6, name
            assert loaded[name].double().abs().max().item() == pytest.approx(figures["abs_max"]), name


def test_a_map_parting_tied_embeddings_is_an_error_as_from_pretrained_fails_on_it(tmp_path: Path) -> None:
    """Already right (an oracle test): a tied Llama planned by plan-devices keeps lm_head with embed_tokens; a
    hand-written map sending lm_head to disk and the embeddings to the CPU is a `tied-split` error (exit 1), and
    from_pretrained with that very map fails (accelerate's offload index holds no lm_head.weight)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path / "tied"
    LlamaForCausalLM(LlamaConfig(vocab_size=4000, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 max_position_embeddings=128, tie_word_embeddings=True)).save_pretrained(folder)
    planned = json_report("plan-devices", str(folder), "--gpu", "1.2MB", "--gpu", "1.2MB", "--cpu", "10MB")
    assert planned["device_map"]["lm_head"] == planned["device_map"]["model.embed_tokens"]
    parted = {"model.embed_tokens": "cpu", "model.layers": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu",
              "lm_head": "disk"}
    (tmp_path / "map.json").write_text(json.dumps(parted))
    result = run_cli("plan-devices", str(folder), "--map", str(tmp_path / "map.json"), "--cpu", "10MB", "--disk",
                     "--json")
    assert result.exit_code == 1
    assert [f["code"] for f in json.loads(result.stdout)["findings"]] == ["tied-split"]
    with pytest.raises(KeyError, match="lm_head.weight"):
        model = LlamaForCausalLM.from_pretrained(folder, device_map=parted, offload_folder=str(tmp_path / "off"))
        model(torch.tensor([[1, 2, 3]]))


def test_an_offloaded_translation_model_is_said_per_generated_token(marian: Path) -> None:
    """MarianMTModel (opus-mt) generates tokens (its can_generate() is true), but its name ends in none of the
    generating heads: its offload was said "moved to the GPU for every forward pass", as an encoder's is."""
    from transformers import MarianMTModel

    assert MarianMTModel.can_generate()
    result = run_cli("plan-devices", str(marian), "--gpu", "300KB", "--cpu", "10MB")
    offload = next(line for line in result.stdout.splitlines() if line.startswith("offload:"))
    # An encoder-decoder: its encoder's share is said once per input, the rest per generated token (quantrest2)
    assert "for every generated token (≥ " in offload and "/token) at an assumed" in offload, offload
