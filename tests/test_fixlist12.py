"""Fix list 12: choices in any case and one refusal for them, one message for a number option out of range, an
empty --revision-b named as itself, a Hub address naming a file, GPTQModel's `dynamic` without `bits`, an output
folder inside its input, torchtune's latest epoch, and weights under a name from_pretrained skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import copy_example, run_cli, run_json


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


def _line(result: object) -> str:
    stderr = result.stderr.strip()  # type: ignore[attr-defined]
    assert "\n" not in stderr
    return stderr


UPPER = ("WARN", "Unsafe", "FP16", "Error", "OFFLOAD", "Balanced")


@pytest.mark.parametrize("command", [
    ("inspect", "{m}", "--fail-on", "WARN"),
    ("check-dtype", "{m}", "--fail-on", "Unsafe", "--target", "FP16"),
    ("diff-keys", "{m}", "{m}", "--fail-on", "Error"),
    ("plan-devices", "{m}", "--gpu", "1GB", "--fail-on", "OFFLOAD", "--strategy", "Balanced"),
])
def test_a_choice_in_upper_case_is_read_as_the_choice(model: Path, command: tuple[str, ...]) -> None:
    """`--dtype FP16` and `--target FP16` were accepted while `--fail-on WARN` and `--strategy Balanced` were refused
    with "did you mean 'warn'?": a choice is now the same whatever its case."""
    result = run_cli(*(part.format(m=model) for part in command), "--json")
    lower = run_cli(*(part.lower() if part in UPPER else part.format(m=model)
                      for part in command), "--json")
    assert result.exit_code in (0, 1) and "error:" not in result.stderr, result.stderr
    assert (result.exit_code, sorted(json.loads(result.stdout))) == (lower.exit_code, sorted(json.loads(lower.stdout)))


def test_a_choice_in_upper_case_is_planned_as_typed_in_lower_case(model: Path) -> None:
    upper = run_json("plan-devices", model, "--gpu", "1GB", "--gpu", "1GB", "--strategy", "BALANCED")
    lower = run_json("plan-devices", model, "--gpu", "1GB", "--gpu", "1GB", "--strategy", "balanced")
    assert upper == lower and upper[0] == 0


def test_an_output_format_in_upper_case_is_written(model: Path, tmp_path: Path) -> None:
    """`convert --to SAFETENSORS` and `shard --format BIN` were refused ("did you mean 'safetensors'?")."""
    code, data = run_json("convert", model, "-o", tmp_path / "a", "--to", "SAFETENSORS")
    assert code == 0 and data["plan"]["format"] == "safetensors"
    assert (tmp_path / "a" / "model.safetensors").is_file()
    code, data = run_json("shard", model, "-o", tmp_path / "b", "--single", "--format", "BIN")
    assert code == 0 and (tmp_path / "b" / "pytorch_model.bin").is_file()


@pytest.mark.parametrize(("command", "said"), [
    (("inspect", "{m}", "--fail-on", "warning"),
     "--fail-on 'warning': choose one of info, warn, error; did you mean 'warn'?"),
    (("diff-keys", "{m}", "{m}", "--fail-on", "warning"),
     "--fail-on 'warning': choose one of info, warn, error; did you mean 'warn'?"),
    (("check-dtype", "{m}", "--fail-on", "unsave"),
     "--fail-on 'unsave': choose one of info, warn, error, unsafe, lossy; did you mean 'unsafe'?"),
    (("plan-devices", "{m}", "--gpu", "1GB", "--fail-on", "offloaded"),
     "--fail-on 'offloaded': choose one of info, warn, error, offload, no-fit; did you mean 'offload'?"),
    (("plan-devices", "{m}", "--gpu", "1GB", "--strategy", "greedy"),
     "--strategy 'greedy': choose one of auto, balanced, balanced_low_0, sequential"),
])
def test_every_choice_is_refused_in_one_message(model: Path, command: tuple[str, ...], said: str) -> None:
    """The four --fail-on refusals were worded four ways ("must be warn or error, not", "expected one of", "choose
    one of"), and --strategy's did not name its option ("unknown strategy")."""
    result = run_cli(*(part.format(m=model) for part in command))
    assert result.exit_code == 2 and result.stdout == ""
    assert _line(result) == f"error: {said}"


@pytest.mark.parametrize("command", [("inspect", "{m}", "--sample", "0"), ("check-dtype", "{m}", "--sample", "0")])
def test_sample_zero_is_refused_in_one_message(model: Path, command: tuple[str, ...]) -> None:
    """inspect gave Click's "Invalid value for '--sample': 0 is not in the range x>=1." in a box, check-dtype its
    own line."""
    result = run_cli(*(part.format(m=model) for part in command))
    assert result.exit_code == 2
    assert _line(result) == "error: --sample must be a positive number of values, not 0"


def test_a_negative_depth_is_refused_as_worst_is(model: Path) -> None:
    result = run_cli("inspect", model, "--depth", "-1")
    assert result.exit_code == 2
    assert _line(result) == "error: --depth must be 0 or more levels, not -1"
    result = run_cli("check-dtype", model, "--worst", "-1")
    assert result.exit_code == 2 and _line(result) == "error: --worst must be 0 or more tensors, not -1"
    assert run_cli("inspect", model, "--depth", "0").exit_code == 0


@pytest.mark.parametrize("blank", ["", " "])
def test_an_empty_revision_b_is_named_as_itself(model: Path, blank: str) -> None:
    """`diff-keys A B --revision-b " "` was refused as "--revision is empty", an option not given."""
    result = run_cli("diff-keys", model, "org/name", "--revision-b", blank)
    assert result.exit_code == 2
    assert _line(result) == ("error: --revision-b is empty: give a branch, tag or commit, or leave it out for B to "
                             "take --revision (or main)")
    result = run_cli("diff-keys", model, "org/name", "--revision", blank)
    assert _line(result) == "error: --revision is empty: give a branch, tag or commit, or leave it out for main"


@pytest.mark.parametrize(("bits", "given"), [(None, "has no top-level `bits`"), ("4", "sets top-level `bits` to '4'")])
def test_gptqmodel_dynamic_without_top_level_bits_says_from_pretrained_raises(bits: str | None, given: str) -> None:
    """The `dynamic` warning said from_pretrained builds every Linear "at the top-level ? bits": without a valid
    `bits` transformers' GPTQConfig raises (checked below), so from_pretrained builds nothing."""
    import transformers
    from transformers import GPTQConfig

    from weightdoctor.quantized import gptq_dynamic_warning

    quantization: dict[str, object] = {"quant_method": "gptq", "dynamic": {r".*\.self_attn\..*": {"bits": 8}}}
    if bits is not None:
        quantization["bits"] = bits
    with pytest.raises((TypeError, ValueError), match="bits"):
        GPTQConfig.from_dict(dict(quantization))
    warning = gptq_dynamic_warning({"quantization_config": quantization})
    assert warning == (
        "quantization_config.dynamic holds GPTQModel's per-module overrides (1 pattern), which transformers "
        f"{transformers.__version__} does not read (its GPTQConfig drops `dynamic`), and the config {given}: "
        "GPTQConfig needs 2, 3, 4 or 8 there, so from_pretrained raises before building any Linear; GPTQModel's "
        "loader and vLLM honour them")


ONNX_PAGE = "https://hf.co/org/name/blob/v2/onnx/model.onnx"


def test_a_hub_address_of_a_file_with_another_suffix_is_said_to_name_a_file(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A /blob/ (or /resolve/) page names a file: not cached, it was said to be "folder 'onnx/model.onnx' of revision
    'v2'", since only .safetensors, .json and pickle suffixes were read as files; /tree/ still names a folder."""
    (tmp_path / "hub").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for page in (ONNX_PAGE, ONNX_PAGE.replace("/blob/", "/resolve/")):
        result = run_cli("inspect", page)
        assert result.exit_code == 2
        assert _line(result) == (
            f"error: {page}: file 'onnx/model.onnx' of revision 'v2' of 'org/name' is not in the Hugging Face cache "
            f"at {tmp_path / 'hub'} (HF_HUB_OFFLINE is set): `hf download org/name onnx/model.onnx --revision v2` "
            "fetches it")
    tree = run_cli("inspect", "https://hf.co/org/name/tree/v2/onnx")
    assert "folder 'onnx' of revision 'v2'" in _line(tree)


def test_a_cached_file_named_by_its_hub_address_is_read_as_that_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.build import write_hub_cache

    files = tmp_path / "files"
    (files / "onnx").mkdir(parents=True)
    (files / "onnx" / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    (files / "config.json").write_text('{"model_type": "bert"}')
    write_hub_cache(tmp_path / "hub", "org/name", files, revision="v2")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    line = _line(run_cli("inspect", ONNX_PAGE))
    assert "ONNX" in line and "folder" not in line and "model.onnx" in line


def test_an_output_inside_the_model_folder_does_not_copy_an_earlier_output(model: Path, tmp_path: Path) -> None:
    """`convert m -o m/sub2` copied the earlier output `m/sub` whole as a side folder (and the next run both, one
    level deeper): inside the model folder, a subfolder holding weight files is left out, by name; other subfolders
    are copied, and an output elsewhere still copies a module's own weights (sentence-transformers' 2_Dense/)."""
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    assert run_cli("convert", model, "-o", model / "sub").exit_code == 0
    code, data = run_json("convert", model, "-o", model / "sub2")
    assert code == 0
    assert sorted(data["plan"]["copied"]) == ["1_Pooling/config.json", "config.json"]
    assert ("not copied: sub/ (holds weight files, as an earlier output does: not copied into an output inside the "
            "model folder; write the output elsewhere to copy it)") in data["plan"]["warnings"]
    assert sorted(p.name for p in (model / "sub2").iterdir()) == ["1_Pooling", "config.json", "model.safetensors"]
    # shard takes the same side files.
    code, data = run_json("shard", model, "-o", model / "shards", "--max", "200KB")
    assert code == 0 and not (model / "shards" / "sub").exists() and not (model / "shards" / "sub2").exists()
    # Outside the model folder a subfolder with weights is part of the model (sentence-transformers' 2_Dense/).
    (model / "sub2").rename(model / "2_Dense")
    code, data = run_json("convert", model, "-o", tmp_path / "elsewhere")
    assert code == 0 and "2_Dense/model.safetensors" in data["plan"]["copied"]


LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16, "intermediate_size": 32,
         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 64}


def _llama_folder(folder: Path, weights_name: str) -> Path:
    """A tiny Llama's config.json and its weights under `weights_name` (seeded)."""
    import torch
    import transformers

    folder.mkdir()
    config = transformers.LlamaConfig(**{k: v for k, v in LLAMA.items() if k not in ("model_type", "architectures")})
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in transformers.LlamaForCausalLM(config).state_dict().items()}
    if weights_name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, folder / weights_name)
    else:
        torch.save(state, folder / weights_name)
    (folder / "config.json").write_text(json.dumps(LLAMA))
    return folder


@pytest.mark.parametrize("weights_name", ["consolidated.safetensors", "hf_model_0001_0.pt"])
def test_inspect_says_from_pretrained_skips_the_only_weight_file(tmp_path: Path, weights_name: str) -> None:
    """plan-devices and diff-keys said from_pretrained(folder) raises on a folder whose only weights are under a name
    it does not look for; inspect said nothing. It now gives plan-devices' words, from the same function."""
    import transformers

    folder = _llama_folder(tmp_path / "m", weights_name)
    with pytest.raises(OSError, match="no file named model.safetensors"):
        transformers.AutoModelForCausalLM.from_pretrained(folder)
    said = ("from_pretrained(folder) looks for model.safetensors or pytorch_model.bin (or their sharded index) and "
            f"raises here: the weights read are {weights_name}")
    code, data = run_json("inspect", folder)
    assert code == 0
    assert [w for w in data["warnings"] if "from_pretrained(folder)" in w] == [
        f"{said}; from_pretrained loads them once saved under its names (save_pretrained)"]
    plan = run_json("plan-devices", folder, "--gpu", "1GB")[1]
    assert [w for w in plan["warnings"] if w.startswith(said)] != []
    # Under from_pretrained's own name, nothing is said.
    (folder / weights_name).rename(folder / ("model.safetensors" if weights_name.endswith(".safetensors")
                                             else "pytorch_model.bin"))
    assert not [w for w in run_json("inspect", folder)[1]["warnings"] if "from_pretrained(folder)" in w]


def test_inspect_says_nothing_of_a_diffusers_models_own_name(tmp_path: Path) -> None:
    """diffusers reads diffusion_pytorch_model.safetensors itself: no word of transformers' from_pretrained."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "unet"
    folder.mkdir()
    save_file({"conv_in.weight": torch.zeros(2, 2)}, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    code, data = run_json("inspect", folder)
    assert code == 0 and not [w for w in data["warnings"] if "from_pretrained(folder)" in w]


def test_a_folder_of_numbered_saves_points_at_the_latest(tmp_path: Path) -> None:
    """torchtune's output_dir holds epoch_0/ ... epoch_10/: the example was epoch_0, the earliest."""
    import torch
    from safetensors.torch import save_file

    run = tmp_path / "out"
    for epoch in (0, 1, 2, 10):
        (run / f"epoch_{epoch}").mkdir(parents=True)
        save_file({"a.weight": torch.zeros(2, 2)}, run / f"epoch_{epoch}" / "model-00001-of-00001.safetensors")
    line = _line(run_cli("inspect", run))
    assert line.endswith("weights are in subfolders (epoch_0/, epoch_1/, epoch_2/, epoch_10/): point at one, e.g. "
                         f"{run / 'epoch_10'} (the highest-numbered, the run's latest save)")
    # Folders of no one series keep the first as the example.
    (run / "epoch_10").rename(run / "final")
    assert _line(run_cli("inspect", run)).endswith(f"e.g. {run / 'epoch_0'}")


def test_convert_says_the_output_keeps_a_name_from_pretrained_skips(tmp_path: Path) -> None:
    """Converting torchtune's hf_model_0001_0.pt folder wrote hf_model_0001_0.safetensors, which from_pretrained does
    not look for either, without a word."""
    import transformers

    folder = _llama_folder(tmp_path / "tt", "hf_model_0001_0.pt")
    code, data = run_json("convert", folder, "-o", tmp_path / "st")
    assert code == 0 and [f["filename"] for f in data["plan"]["files"]] == ["hf_model_0001_0.safetensors"]
    assert ("from_pretrained(folder) looks for model.safetensors or pytorch_model.bin (or their sharded index) and "
            "raises here: the weights read are hf_model_0001_0.pt; the output keeps the name "
            "(hf_model_0001_0.safetensors), which it does not look for either: rename it to model.safetensors where "
            "its tensors are under transformers' names (torchtune's hf_model_*), else load and save it with "
            "save_pretrained") in data["plan"]["warnings"]
    with pytest.raises(OSError, match="no file named model.safetensors"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "st")
    # The fix it names loads.
    (tmp_path / "st" / "hf_model_0001_0.safetensors").rename(tmp_path / "st" / "model.safetensors")
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "st").num_parameters() > 0
    # A folder saved under from_pretrained's names converts without the warning.
    code, data = run_json("convert", tmp_path / "st", "-o", tmp_path / "bin", "--to", "bin")
    assert code == 0 and not [w for w in data["plan"]["warnings"] if "from_pretrained(folder)" in w]
