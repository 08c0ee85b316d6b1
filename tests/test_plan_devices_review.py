"""plan-devices against what from_pretrained / accelerate really do: the cases a review found to differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.plan_devices import save_tiny_model
from tests.helpers import run_cli, run_json


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> folder of the tiny seeded models these tests plan (built once)."""
    out = tmp_path_factory.mktemp("tiny")
    return {name: save_tiny_model(name, out) for name in ("llama", "ctrl", "llava")}


# ----------------------------------------------------------------------------------------------- sizes (F4)


@pytest.mark.parametrize("text", [
    "24GB", "4.1GB", "3.9999999999GB", "1e3MB", " 24 GB", "2GiB", "0.5GiB", "24gib", "0GB", "80KB", "1_000MB",
])
def test_sizes_truncate_exactly_as_accelerate(text: str) -> None:
    from accelerate.utils import convert_file_size_to_int

    from weightdoctor.units import parse_size

    assert parse_size(text) == convert_file_size_to_int(text)


@pytest.mark.parametrize("text", ["1.005KB", "4.1GB", "0.0015KB", "1.5TB"])
def test_sizes_truncate_exactly_as_huggingface_hub(text: str) -> None:
    from huggingface_hub.serialization._base import parse_size_to_int

    from weightdoctor.units import parse_size

    assert parse_size(text) == parse_size_to_int(text)
    assert parse_size("1.005KB") == 1004


@pytest.mark.parametrize("text", ["24Gb", "500Mb", "8kb", "1gb"])
def test_bit_sizes_are_refused_with_one_line(tiny: dict[str, Path], text: str) -> None:
    result = run_cli("plan-devices", tiny["llama"], "--gpu", text)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: invalid value for '--gpu': size '{text}' is ambiguous: a lowercase b "
                                    "means bits")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_extras_accelerate_rejects_stay_harmless() -> None:
    from weightdoctor.units import parse_size

    assert parse_size("1.5TB") == 1_500_000_000_000 and parse_size("10") == 10 and parse_size("0") == 0


@pytest.mark.parametrize("size", ["0.4", "0.0004KB"])
def test_a_positive_size_under_one_byte_is_a_usage_error(tiny: dict[str, Path], tmp_path: Path, size: str) -> None:
    # shard --max 0 means "one file": a tiny positive --max must not silently become that
    result = run_cli("shard", tiny["llama"], "--max", size, "-o", tmp_path / "out")
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip() == (f"error: invalid value for '--max': size '{size}' is under one byte: give "
                                     "at least 1 byte (0 means none)")
    result = run_cli("plan-devices", tiny["llama"], "--gpu", size)
    assert result.exit_code == 2 and "under one byte" in result.stderr


# ----------------------------------------------------------------------------------------------- --model-class (F5)


def test_wrong_model_class_hint_names_what_plan_devices_takes(tiny: dict[str, Path]) -> None:
    result = run_cli("plan-devices", tiny["llama"], "--gpu", "1GB", "--model-class", "BertModel")
    assert result.exit_code == 2 and result.stdout == ""
    assert "BertModel needs a 'bert' config, but the config's model_type is 'llama'" in result.stderr
    assert "--config" not in result.stderr
    assert result.stderr.rstrip().endswith("or give a config.json of that model type as SOURCE")


def test_wrong_model_class_hint_in_diff_keys_still_names_its_config_option(tiny: dict[str, Path]) -> None:
    result = run_cli("diff-keys", tiny["llama"], "--model-class", "BertModel")
    assert result.exit_code == 2 and "pick a class of that model type, or pass --config" in result.stderr


# ----------------------------------------------------------------------------------------------- dtype="auto" (F1)


def _resave(folder: Path, out: Path, cast: dict[str, object], drop_config_dtype: bool = True,
            config_dtype: str | None = None) -> Path:
    """A copy of `folder` whose tensors are cast by name (`cast`: substring -> torch dtype, first match wins)."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out)
    tensors = load_file(str(folder / "model.safetensors"))
    default = cast.get("*")
    save_file({k: v.to(next((d for s, d in cast.items() if s != "*" and s in k), default or v.dtype))
               for k, v in tensors.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    if drop_config_dtype:
        config.pop("dtype", None)
        config.pop("torch_dtype", None)
    if config_dtype is not None:
        config["dtype"] = config_dtype
    (out / "config.json").write_text(json.dumps(config))
    return out


def _auto_dtype_of_from_pretrained(folder: Path) -> str:
    import transformers

    model = transformers.LlamaForCausalLM.from_pretrained(folder, dtype="auto")
    return str(model.dtype).removeprefix("torch.")


def test_auto_dtype_of_a_mixed_checkpoint_is_the_one_transformers_reads_first(tiny, tmp_path) -> None:
    import torch

    from weightdoctor.plan_devices import DTYPES

    # norms fp32, everything else bf16: the safetensors header lists the fp32 norms first, but transformers
    # reads the keys sorted (lm_head.weight, bf16, comes first) and builds the model in bf16
    folder = _resave(tiny["llama"], tmp_path / "mixed", {"norm": torch.float32, "*": torch.bfloat16})
    truth = _auto_dtype_of_from_pretrained(folder)
    assert truth == "bfloat16"
    code, data = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0 and DTYPES[data["dtype"]][0] == truth
    assert data["weights_bytes"] == data["num_params"] * 2


@pytest.mark.parametrize("where", ["checkpoint", "config"])
def test_float64_is_planned_at_8_bytes(tiny, tmp_path, where: str) -> None:
    import torch

    if where == "checkpoint":
        folder = _resave(tiny["llama"], tmp_path / "fp64", {"*": torch.float64})
    else:
        folder = _resave(tiny["llama"], tmp_path / "fp64cfg", {}, config_dtype="float64")
    assert _auto_dtype_of_from_pretrained(folder) == "float64"
    code, data = run_json("plan-devices", folder, "--gpu", "400KB", "--gpu", "300KB", "--cpu", "10MB")
    assert code == 0 and data["dtype"] == "fp64"
    assert data["weights_bytes"] == data["num_params"] * 8
    assert sum(d["used_bytes"] for d in data["devices"]) == data["weights_bytes"] + data["buffers_bytes"]
    # --dtype fp64 is accepted too, and fp32 is the first lower dtype the suggestions try
    code, same = run_json("plan-devices", folder, "--gpu", "400KB", "--gpu", "300KB", "--cpu", "10MB",
                          "--dtype", "float64")
    assert same["device_map"] == data["device_map"]


# ----------------------------------------------------------------------------------------- bitsandbytes offload (F2)


@pytest.mark.parametrize("dtype", ["int4", "int8"])
def test_bitsandbytes_offload_warns_that_from_pretrained_refuses_it(tiny, dtype: str) -> None:
    # GPUs that take a part of the model: the tiny float32 Llama's unquantized rest is planned at float32, as
    # from_pretrained builds it (tests/test_plan_quantrest.py); at the float16 once planned, 200KB and 150KB did.
    args = ["plan-devices", tiny["llama"], "--gpu", "400KB", "--gpu", "300KB", "--cpu", "2MB", "--dtype", dtype]
    code, data = run_json(*args)
    assert code == 0 and data["verdict"] == "needs-cpu-offload"
    assert "cpu" in data["device_map"].values()
    [warning] = [w for w in data["warnings"] if w.startswith(f"bitsandbytes {dtype} with modules on the CPU")]
    assert "Some modules are dispatched on the CPU or the disk" in warning
    load_in = "load_in_4bit=True" if dtype == "int4" else "load_in_8bit=True"
    assert f"BitsAndBytesConfig({load_in}, llm_int8_enable_fp32_cpu_offload=True)" in warning
    assert "stay in fp32, not quantized" in warning
    # the map itself is not changed by the warning: the same as planned without it
    from weightdoctor.plan_devices import PlanRequest, build_planned_model, open_plan_source, plan_devices

    with open_plan_source(str(tiny["llama"])) as checkpoint:
        planned = build_planned_model(checkpoint, dtype)
    report = plan_devices(planned, PlanRequest(gpus=[400_000, 300_000], cpu=2_000_000))
    assert report.device_map == data["device_map"]
    # text mode says it too, on stderr
    result = run_cli(*args)
    assert result.exit_code == 0 and "llm_int8_enable_fp32_cpu_offload=True" in result.stderr


@pytest.mark.parametrize("args", [["--gpu", "10MB"], ["--cpu", "10MB"]])
def test_bitsandbytes_without_offload_or_cpu_only_has_no_such_warning(tiny, args: list[str]) -> None:
    # all on GPUs, or all on the CPU: bitsandbytes' quantizer accepts both maps
    code, data = run_json("plan-devices", tiny["llama"], *args, "--dtype", "int4")
    assert code == 0 and not [w for w in data["warnings"] if "llm_int8_enable_fp32_cpu_offload" in w]


# ----------------------------------------------------------------------------------------------- map order (F3, F6)


def test_next_module_too_big_names_the_module_the_planner_tried(tiny) -> None:
    from weightdoctor.plan_devices import PlanRequest, _sizes, build_planned_model, open_plan_source, plan_devices

    with open_plan_source(str(tiny["llama"])) as checkpoint:
        planned = build_planned_model(checkpoint)
    report = plan_devices(planned, PlanRequest(gpus=[400_000, 300_000], cpu=10**7))
    # clean_device_map merged model.layers.0-3 (all on the CPU) into model.layers and moved it to the end;
    # the map now reads in placement order
    assert list(report.device_map) == ["model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb",
                                       "lm_head"]
    cuda1 = next(d for d in report.devices if d.device == "cuda:1")
    [held] = [h for h in cuda1.held_back if h.reason == "next-module-too-big"]
    # model.layers was split: what did not fit in the 44 KB left was its first layer, not model.norm (256 B)
    assert held.detail.startswith("the next module, model.layers.0 (")
    sizes, _ = _sizes(planned, planned.dtype)
    assert sizes["model.layers.0"] > held.bytes
    # every such explanation names a module larger than the room it says was left
    for device in report.devices:
        for item in device.held_back:
            if item.reason == "next-module-too-big":
                name = item.detail.removeprefix("the next module, ").split(" (")[0]
                assert sizes[name] > item.bytes, (device.device, item.detail)


def test_json_map_order_does_not_depend_on_the_hash_seed(tiny) -> None:
    from tests.helpers import run_subprocess

    args = ["plan-devices", tiny["llava"], "--model-class", "LlavaModel", "--gpu", "150KB", "--gpu", "200KB",
            "--cpu", "300KB", "--json"]
    outputs = {seed: run_subprocess(*args, env={"PYTHONHASHSEED": seed}) for seed in ("0", "1", "2")}
    assert all(proc.returncode == 0 for proc in outputs.values())
    assert len({proc.stdout for proc in outputs.values()}) == 1
    import json

    data = json.loads(outputs["0"].stdout)
    # the order the planner placed them in (the model's module order), not the order of a set of names
    assert list(data["device_map"]) == ["vision_tower", "multi_modal_projector", "language_model"]
    labels = [r["label"] for d in data["devices"] for r in d["ranges"]]
    assert labels == ["vision_tower", "multi_modal_projector", "language_model"]


# ----------------------------------------------------------------------------------------------- no config.json (F7)


def _gpt2_without_config(out: Path, layers: int = 12) -> Path:
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=1000, n_embd=64, n_layer=layers,
                                                                 n_head=4, n_positions=128))
    out.mkdir(parents=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_without_config_layers_are_in_natural_order_and_kept_whole(tmp_path) -> None:
    folder = _gpt2_without_config(tmp_path / "nocfg")
    code, data = run_json("plan-devices", folder, "--gpu", "1MB", "--gpu", "1MB", "--cpu", "10MB")
    assert code == 0 and data["built_from"] == "tensors"
    blocks = [name for name in data["device_map"] if name.startswith("transformer.h.")]
    # numbers as numbers (h.2 before h.10), and every block whole: no transformer.h.11.attn entry
    assert blocks == [f"transformer.h.{i}" for i in range(12)]
    assert data["no_split"] == ["NumberedBlock"]
    assert len({data["device_map"][b] for b in blocks}) == 3  # spread over both GPUs and the CPU
    [warning] = [w for w in data["warnings"] if "numbered block" in w]
    assert "transformer.h.0, transformer.h.1, ..." in warning and "--no-split overrides" in warning
    # ranges read naturally too
    labels = [r["label"] for d in data["devices"] for r in d["ranges"]]
    assert labels[:3] == ["transformer.h.0–2", "transformer.h.3–7", "transformer.h.8–11"]


# ----------------------------------------------------------------------------------------------- unplaced buffers (F8)


def test_a_split_modules_own_buffer_is_counted_where_from_pretrained_puts_it(tiny) -> None:
    from fixtures.plan_devices import from_pretrained_device_map

    code, data = run_json("plan-devices", tiny["ctrl"], "--gpu", "416966", "--gpu", "555955", "--cpu", "2MB")
    assert code == 0
    # the map is from_pretrained's own: `transformer` is split, and its non-persistent pos_encoding is in no entry
    truth = from_pretrained_device_map(tiny["ctrl"], "auto", {0: 416966, 1: 555955, "cpu": 2_000_000})
    assert data["device_map"] == truth
    assert not any(key == "transformer" or "pos_encoding" in key for key in truth)
    # from_pretrained gives it get_device(device_map, name): no "" entry, so the CPU
    assert data["unplaced"] == {"transformer.pos_encoding": "cpu"}
    used = {d["device"]: d["used_bytes"] for d in data["devices"]}
    assert used["cpu"] == 128 * 64 * 4  # n_positions x n_embd, fp32
    assert sum(used.values()) == data["weights_bytes"] + data["buffers_bytes"]
    assert data["verdict"] == "needs-cpu-offload" and data["offload"]["cpu_bytes"] == 128 * 64 * 4
    [warning] = [w for w in data["warnings"] if "in no map entry" in w]
    assert "transformer.pos_encoding (32.77 KB)" in warning and "from_pretrained puts them on cpu" in warning
    cpu = next(d for d in data["devices"] if d["device"] == "cpu")
    assert [r["label"] for r in cpu["ranges"]] == ["transformer.pos_encoding (in no map entry)"]


def test_an_unsplit_model_has_no_unplaced_tensors(tiny) -> None:
    code, data = run_json("plan-devices", tiny["ctrl"], "--gpu", "10MB")
    assert code == 0 and data["unplaced"] == {} and data["verdict"] == "fits-on-gpus"
    assert not [w for w in data["warnings"] if "in no map entry" in w]
