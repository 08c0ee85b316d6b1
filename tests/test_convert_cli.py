"""`weightdoctor convert` on the fixture checkpoints, read back by safetensors, torch, huggingface_hub
and transformers."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.helpers import flip_a_bit_in_the_third_copy, run_cli, run_json

INPUT_IDS = torch.tensor([[5, 17, 42, 7, 3, 88, 1]])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_model(converted: Path, original: Path) -> None:
    """Loaded by transformers, both give equal weights (bitwise) and the same logits on a fixed input.

    Logits are compared with a tight tolerance: two loads of identical weights can differ in the last
    bits because of memory alignment (seen here even between two loads of one safetensors file).
    """
    model_a, model_b = _load(converted), _load(original)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    with torch.no_grad():
        torch.testing.assert_close(model_a(INPUT_IDS).logits, model_b(INPUT_IDS).logits, rtol=1e-5, atol=1e-7)


def _load(folder: Path) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(folder)
    auto = {"gpt2": AutoModelForCausalLM, "roberta": AutoModelForMaskedLM}.get(
        config.model_type, AutoModelForSequenceClassification)
    model = auto.from_pretrained(folder).eval()
    return model


def test_bin_to_safetensors_equals_source_and_loads_everywhere(fx: dict[str, Path], tmp_path: Path) -> None:
    source = fx["files"] / "bert.bin"
    before = _sha(source)
    out = tmp_path / "model.safetensors"
    code, data = run_json("convert", source, "-o", out, "--metadata", "origin=test")
    assert code == 0
    assert data["plan"]["format"] == "safetensors" and data["plan"]["single_file"] is True
    assert data["write"]["verified"] is True and data["write"]["tensors_verified"] == data["plan"]["num_tensors"]
    original = torch.load(source, weights_only=True)
    converted = load_file(out)
    assert set(converted) == set(original)
    assert all(torch.equal(converted[k], original[k]) for k in original)
    with safe_open(out, framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "origin": "test"}
    from huggingface_hub import load_state_dict_from_file

    hub = load_state_dict_from_file(out)
    assert all(torch.equal(hub[k], original[k]) for k in original)
    assert _sha(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_round_trip_bin_safetensors_bin_is_bitwise_equal(fx: dict[str, Path], tmp_path: Path) -> None:
    source = fx["files"] / "bert.bin"
    assert run_cli("convert", source, "-o", tmp_path / "a.safetensors").exit_code == 0
    result = run_cli("convert", tmp_path / "a.safetensors", "-o", tmp_path / "b.bin")
    assert result.exit_code == 0, result.stderr
    original = torch.load(source, weights_only=True)
    back = torch.load(tmp_path / "b.bin", weights_only=True)
    assert sorted(back) == sorted(original)
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert back[name].contiguous().view(torch.uint8).reshape(-1).tolist() == \
            tensor.contiguous().view(torch.uint8).reshape(-1).tolist()


def test_tied_gpt2_drops_the_alias_as_transformers_does_and_gives_same_logits(
    fx: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "gpt2"
    code, data = run_json("convert", fx["gpt2-bin"], "-o", out)
    assert code == 0
    assert data["plan"]["dropped_aliases"] == [{"name": "lm_head.weight", "kept": "transformer.wte.weight"}]
    assert data["plan"]["copied"] == ["config.json"]
    # transformers' own save drops the same name.
    assert set(load_file(out / "model.safetensors")) == set(load_file(fx["gpt2"] / "model.safetensors"))
    assert_same_model(out, fx["gpt2-bin"])
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    # Without a config the kept name is huggingface_hub's choice (first in sorted order), said in a warning;
    # transformers still reloads it with the same tied weights.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(fx["gpt2-bin"] / "config.json", bare / "config.json")
    result = run_cli("convert", fx["files"] / "gpt2-tied.bin", "-o", bare / "model.safetensors")
    assert result.exit_code == 0
    assert "tied weights chosen by name order, since no config.json" in result.stderr
    assert "dropped transformer.wte.weight (kept lm_head.weight)" in result.stdout
    assert_same_model(bare, fx["gpt2-bin"])


def test_sharded_bin_folder_converts_shard_by_shard_and_transformers_loads_it(
    fx: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bert"
    result = run_cli("convert", fx["bert-sharded-bin"], "-o", out)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors", "model.safetensors.index.json"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    source_index = json.loads((fx["bert-sharded-bin"] / "pytorch_model.bin.index.json").read_text())
    assert index["weight_map"] == {k: v.replace("pytorch_model", "model").replace(".bin", ".safetensors")
                                   for k, v in source_index["weight_map"].items()}
    assert index["metadata"]["total_size"] == source_index["metadata"]["total_size"]
    assert_same_model(out, fx["bert-sharded-bin"])
    assert "verified" in result.stdout and "converted" in result.stdout


def test_safetensors_folder_to_bin_loads_in_transformers(fx: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "roberta-bin"
    result = run_cli("convert", fx["roberta"], "-o", out, "--to", "bin")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert_same_model(out, fx["roberta"])


def test_cast_to_fp16_keeping_norms_in_fp32(fx: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "half.safetensors"
    code, data = run_json("convert", fx["files"] / "bert.bin", "-o", out, "--dtype", "fp16",
                          "--keep-fp32", r"LayerNorm")
    assert code == 0
    original = torch.load(fx["files"] / "bert.bin", weights_only=True)
    converted = load_file(out)
    for name, tensor in original.items():
        if "LayerNorm" in name:
            assert converted[name].dtype == torch.float32 and torch.equal(converted[name], tensor)
        elif tensor.is_floating_point():
            assert converted[name].dtype == torch.float16 and torch.equal(converted[name], tensor.half())
        else:
            assert converted[name].dtype == tensor.dtype and torch.equal(converted[name], tensor)
    assert data["plan"]["cast"] == {"float32->float16": sum(
        1 for n, t in original.items() if t.is_floating_point() and "LayerNorm" not in n)}
    assert len(data["plan"]["kept_fp32"]) == sum("LayerNorm" in n for n in original)


def test_fp16_overflow_stops_with_the_tensors_named_unless_allowed(tmp_path: Path) -> None:
    sd = {"ok": torch.randn(10), "big.weight": torch.tensor([1.0, 70000.0, -1e6]),
          "tiny.weight": torch.full((100,), 1e-9), "ids": torch.arange(3)}
    torch.save(sd, tmp_path / "in.bin")
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", tmp_path / "in.bin", "-o", out, "--dtype", "fp16")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "big.weight (2 values become inf)" in lines[0] and "tiny.weight (100.0% of non-zero" in lines[0]
    assert "check-dtype" in lines[0] and "--allow-overflow" in lines[0] and "ok" not in lines[0].split(":")[-1]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.bin"]
    result = run_cli("convert", tmp_path / "in.bin", "-o", out, "--dtype", "fp16", "--allow-overflow")
    assert result.exit_code == 0, result.stderr
    assert torch.isinf(load_file(out)["big.weight"]).sum() == 2
    # Cast anyway, and said what was lost (it wrote the infs without a word).
    assert "--allow-overflow: the cast lost values in 2 tensors: big.weight (2 values become inf); " \
        "tiny.weight (100.0% of non-zero values become 0)" in " ".join(result.stdout.split())
    code, data = run_json("shard", tmp_path / "in.bin", "--max", "100B", "-o", tmp_path / "shards", "--dtype", "fp16",
                          "--allow-overflow")
    assert code == 0 and sorted(data["write"]["lost"]) == [
        "big.weight (2 values become inf)", "tiny.weight (100.0% of non-zero values become 0)"]
    result = run_cli("convert", tmp_path / "in.bin", "-o", tmp_path / "bf.safetensors", "--dtype", "bf16")
    assert result.exit_code == 0, result.stderr


def test_training_checkpoint_and_ddp_prefix_renames(fx: dict[str, Path], tmp_path: Path) -> None:
    code, data = run_json("convert", fx["files"] / "ddp-nested.pth", "-o", tmp_path / "a.safetensors",
                          "--strip-prefix", "module.", "--add-prefix", "model.")
    assert code == 0 and data["plan"]["renamed"] == data["plan"]["num_tensors"]
    names = set(load_file(tmp_path / "a.safetensors"))
    original = torch.load(fx["files"] / "bert.bin", weights_only=True)
    assert names == {"model." + k for k in original}
    code, data = run_json("convert", fx["files"] / "training.pt", "-o", tmp_path / "b.safetensors",
                          "--rename", r"^bert\.=encoder.")
    assert code == 0
    assert any("model_state_dict" in w for w in data["plan"]["warnings"])
    assert "encoder.embeddings.word_embeddings.weight" in load_file(tmp_path / "b.safetensors")
    result = run_cli("convert", fx["files"] / "bert-legacy.bin", "-o", tmp_path / "c.safetensors")
    assert result.exit_code == 0, result.stderr
    assert set(load_file(tmp_path / "c.safetensors")) == set(original)


def test_existing_output_is_refused_unless_force_and_input_is_never_overwritten(
    fx: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "bert.bin"
    shutil.copyfile(fx["files"] / "bert.bin", source)
    before = _sha(source)
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"earlier")
    result = run_cli("convert", source, "-o", out)
    assert result.exit_code == 2 and "output exists; pass --force" in result.stderr
    assert out.read_bytes() == b"earlier"
    assert run_cli("convert", source, "-o", out, "--force").exit_code == 0
    assert len(load_file(out)) > 0
    for target in (source, tmp_path):
        result = run_cli("convert", source, "-o", target, "--force", "--to", "bin")
        assert result.exit_code == 2 and "overwrite the input" in result.stderr
    assert _sha(source) == before


def test_force_never_replaces_a_fifo_a_folder_or_a_device_map_target_that_is_one(
    fx: dict[str, Path], tmp_path: Path
) -> None:
    """`--force` replaces earlier outputs; `-o /dev/null --force` (as root) once put a file in /dev/null's place."""
    import os
    import stat

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    result = run_cli("convert", fx["files"] / "bert.bin", "-o", fifo, "--force")
    assert result.exit_code == 2 and "is not a regular file (a device, FIFO or socket)" in result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    folder = tmp_path / "taken.safetensors"
    folder.mkdir()
    result = run_cli("convert", fx["files"] / "bert.bin", "-o", folder, "--force")
    assert result.exit_code == 2 and "is a folder" in result.stderr and folder.is_dir()
    result = run_cli("plan-devices", fx["bert"], "--gpu", "1GB", "--output", fifo)
    assert result.exit_code == 2 and "not a regular file" in result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left beside them


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtype", "fp17"], "--dtype 'fp17': unknown dtype (choose fp16, bf16 or fp32)"),
        (["--dtype", "fp16", "--keep-fp32", "("], "--keep-fp32 '(': bad regular expression"),
        (["--keep-fp32", "LayerNorm"], "--keep-fp32 keeps the tensors it matches in fp32 while --dtype casts"),
        (["--rename", "nothing"], "expected REGEX=REPLACEMENT"),
        (["--metadata", "novalue"], "--metadata 'novalue': expected KEY=VALUE"),
        (["--to", "onnx"], "--to 'onnx': choose one of safetensors, bin"),
        (["--rename", "^.*=same"], "renames map both"),
    ],
)
def test_bad_usage_exits_2_with_one_line(fx: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("convert", fx["files"] / "bert.bin", "-o", tmp_path / "x.safetensors", *args)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_dry_run_writes_nothing(fx: dict[str, Path], tmp_path: Path) -> None:
    code, data = run_json("convert", fx["gpt2-bin"], "-o", tmp_path / "out", "--dry-run", "--dtype", "bf16")
    assert code == 0 and data["dry_run"] is True and data["write"] is None
    assert data["plan"]["files"][0]["filename"] == "model.safetensors"
    assert data["plan"]["cast"] == {"float32->bfloat16": 28}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["torch", "byte-copy"])
def test_verification_catches_bytes_that_differ_from_the_source(
    fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    from weightdoctor import rewrite
    from weightdoctor.writers import safetensors_writer

    calls = {"n": 0}
    if path == "torch":
        monkeypatch.setattr(rewrite, "BYTE_COPY", False)
        real_write_all = safetensors_writer._write_all

        def flip_a_bit_in_the_third_tensor(fd: int, data: memoryview | bytes) -> None:
            calls["n"] += 1
            if calls["n"] == 4:  # the header, then tensors
                corrupted = bytearray(data)
                corrupted[0] ^= 0x01
                data = bytes(corrupted)
            real_write_all(fd, data)

        monkeypatch.setattr(safetensors_writer, "_write_all", flip_a_bit_in_the_third_tensor)
    else:
        calls = flip_a_bit_in_the_third_copy(monkeypatch)
    result = run_cli("convert", fx["files"] / "bert.bin", "-o", tmp_path / "x.safetensors")
    assert result.exit_code == 2
    assert "verification failed: the bytes of" in result.stderr and "differ from the source" in result.stderr
    assert list(tmp_path.iterdir()) == []
    calls["n"] = 0
    result = run_cli("convert", fx["files"] / "bert.bin", "-o", tmp_path / "x.safetensors", "--no-verify")
    assert result.exit_code == 0 and "skipped (--no-verify)" in result.stdout


def test_a_hub_repo_id_from_the_cache_converts_to_a_folder(hub_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny-bert-bin"
    code, data = run_json("convert", "weightdoctor-tests/tiny-bert", "-o", out, "--to", "bin")
    assert code == 0 and data["plan"]["single_file"] is False
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert not (out / "config.json").is_symlink()  # the cache's symlinks are copied as files
    snapshot = next(hub_env.glob("models--weightdoctor-tests--tiny-bert/snapshots/*"))
    original = load_file(snapshot / "model.safetensors")
    back = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert back.keys() == original.keys() and all(torch.equal(back[k], original[k]) for k in original)


@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "20KB"]])
def test_tied_aliases_are_recorded_under_the_renamed_names(
    fx: dict[str, Path], tmp_path: Path, command: list[str],
) -> None:
    """A DDP-wrapped GPT-2 .bin (lm_head tied to wte) converted with `--rename '^module\\.='`: the metadata
    recorded `module.lm_head.weight -> module.transformer.wte.weight`, names the written file does not hold."""
    source = tmp_path / "ddp"
    source.mkdir()
    shutil.copyfile(fx["gpt2-bin"] / "config.json", source / "config.json")
    state = torch.load(fx["gpt2-bin"] / "pytorch_model.bin", weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, source / "pytorch_model.bin")
    out = tmp_path / "out"
    code, data = run_json(command[0], source, *command[1:], "-o", out, "--rename", "^module\\.=")
    assert code == 0
    assert data["plan"]["dropped_aliases"] == [{"name": "lm_head.weight", "kept": "transformer.wte.weight"}]
    if command == ["convert"]:
        with safe_open(str(out / "model.safetensors"), "pt") as handle:
            recorded = handle.metadata()
    else:
        recorded = json.loads((out / "model.safetensors.index.json").read_text())["metadata"]
    assert recorded["lm_head.weight"] == "transformer.wte.weight" and not any("module." in k for k in recorded)
    assert_same_model(out, fx["gpt2-bin"])


def test_tied_bin_to_bin_keeps_both_names_on_one_storage(fx: dict[str, Path], tmp_path: Path) -> None:
    for source in (fx["files"] / "gpt2-tied.bin", fx["gpt2-bin"] / "pytorch_model.bin"):
        out = tmp_path / (source.parent.name + ".bin")
        result = run_cli("convert", source, "-o", out)
        assert result.exit_code == 0, result.stderr
        original = torch.load(source, weights_only=True)
        back = torch.load(out, weights_only=True)
        assert back.keys() == original.keys() and all(torch.equal(back[k], original[k]) for k in original)
        assert back["lm_head.weight"].data_ptr() == back["transformer.wte.weight"].data_ptr()


def test_folder_to_a_file_name_writes_one_file(tmp_path: Path) -> None:
    """`convert MODEL_DIR -o x.safetensors` writes a file named x.safetensors, not a folder."""
    from safetensors.torch import load_file

    from tests.helpers import REPO_ROOT

    example = REPO_ROOT / "fixtures" / "example"
    out = tmp_path / "example.safetensors"
    result = run_cli("convert", example, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.is_file()
    assert "config and tokenizer files are not copied" in result.stdout + result.stderr
    original = load_file(example / "model.safetensors")
    converted = load_file(out)
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k]) for k in original)


@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "40KB"]])
def test_a_cast_updates_the_config_dtype(fx: dict[str, Path], tmp_path: Path, command: list[str]) -> None:
    """As save_pretrained writes it: from_pretrained(dtype="auto") then loads the weights in their new dtype."""
    import transformers

    source_config = json.loads((fx["bert"] / "config.json").read_text())
    assert source_config.get("dtype", source_config.get("torch_dtype")) == "float32"
    out = tmp_path / "out"
    code, data = run_json(command[0], fx["bert"], *command[1:], "-o", out, "--dtype", "bf16")
    assert code == 0, data
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    assert {k: v for k, v in config.items() if "dtype" not in k} == {
        k: v for k, v in source_config.items() if "dtype" not in k}
    assert any("config.json follows the cast" in w for w in data["plan"]["warnings"])
    model = transformers.AutoModel.from_pretrained(out, dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16
    code, checked = run_json("check-dtype", out)
    assert checked["config_agreement"]["status"] != "differs", checked["config_agreement"]


def test_a_keep_fp32_pattern_that_matches_nothing_is_named(fx: dict[str, Path], tmp_path: Path) -> None:
    code, data = run_json("convert", fx["bert"], "-o", tmp_path / "out", "--dtype", "bf16", "--keep-fp32", "layernorm")
    assert code == 0 and data["plan"]["kept_fp32"] == []
    assert "--keep-fp32 'layernorm' matches no floating tensor: nothing is kept in fp32" in data["plan"]["warnings"]
    code, data = run_json("convert", fx["bert"], "-o", tmp_path / "out2", "--dtype", "bf16", "--keep-fp32", "LayerNorm")
    assert data["plan"]["kept_fp32"] and not any("matches no floating tensor" in w for w in data["plan"]["warnings"])


@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "40KB"]])
def test_keep_fp32_beside_a_config_says_from_pretrained_casts_them_all(
    fx: dict[str, Path], tmp_path: Path, command: list[str],
) -> None:
    """--keep-fp32 writes LayerNorm in float32, but from_pretrained loads every tensor at one dtype: the user who
    checks the load (not the file) would find bfloat16 norms without a word; now a warning says so."""
    import transformers

    out = tmp_path / "out"
    code, data = run_json(command[0], fx["bert"], *command[1:], "-o", out, "--dtype", "bf16", "--keep-fp32",
                          "LayerNorm")
    assert code == 0 and len(data["plan"]["kept_fp32"]) == 10
    (warning,) = [w for w in data["plan"]["warnings"] if "config.json follows the cast" in w]
    assert ('--keep-fp32: from_pretrained loads every tensor at one dtype (bfloat16 with dtype="auto"), the 10 kept '
            "in float32 included") in warning
    model = transformers.AutoModel.from_pretrained(out, dtype="auto")
    assert model.embeddings.LayerNorm.weight.dtype == torch.bfloat16  # what the warning says
    written = {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(f).items()}
    assert written["bert.embeddings.LayerNorm.weight"].dtype == torch.float32
    # A single output file has no config beside it: nothing to say.
    if command == ["convert"]:
        code, data = run_json("convert", fx["bert"] / "model.safetensors", "-o", tmp_path / "one.safetensors",
                              "--dtype", "bf16", "--keep-fp32", "LayerNorm")
        assert code == 0 and not any("from_pretrained loads every tensor" in w for w in data["plan"]["warnings"])


@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "40KB"]])
def test_keep_fp32_under_a_config_without_a_dtype_writes_the_cast_dtype_into_it(
    fx: dict[str, Path], tmp_path: Path, command: list[str],
) -> None:
    """A config.json that names no dtype leaves from_pretrained(dtype="auto") to the first floating tensor of the
    weights; with --keep-fp32 that can be a kept float32 one, and the whole model then loaded in float32, not at the
    dtype the warning (and check-dtype's remedy) promised. Found by scripts/check_dtype_sweep.py (Llama, Gemma, OPT
    with tied embeddings kept in fp32). The config now gets the cast's dtype, as save_pretrained writes it."""
    import shutil

    import transformers

    source = tmp_path / "src"
    shutil.copytree(fx["bert"], source)
    config = json.loads((source / "config.json").read_text())
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    (source / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    code, data = run_json(command[0], source, *command[1:], "-o", out, "--dtype", "fp16", "--keep-fp32",
                          "LayerNorm|pooler")
    assert code == 0
    model = transformers.AutoModel.from_pretrained(out, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.float16}  # what the warning says
    (warning,) = [w for w in data["plan"]["warnings"] if "config.json follows the cast" in w]
    assert warning.startswith("config.json follows the cast: dtype: (not set) → float16;")
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    # Without --keep-fp32 every tensor is at the cast dtype, so dtype="auto" finds it: the config is left as it was.
    code, data = run_json(command[0], source, *command[1:], "-o", tmp_path / "plain", "--dtype", "fp16")
    assert code == 0 and "dtype" not in json.loads((tmp_path / "plain" / "config.json").read_text())


@pytest.mark.parametrize("name", ["enc/layer.w", "", "ctl\x01"])
def test_pickle_keys_safetensors_refuses_are_refused_before_writing(tmp_path: Path, name: str) -> None:
    """The source file and the key are named, before anything is written (it once failed on read-back, naming
    a deleted temporary file); a .bin output keeps such keys."""
    source = tmp_path / "odd.bin"
    torch.save({name: torch.ones(2), "ok": torch.zeros(2)}, source)
    for args in (["convert", source, "-o", tmp_path / "out.safetensors"], ["shard", source, "--single", "-o",
                                                                           tmp_path / "shards"]):
        result = run_cli(*args)
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {source}:"), result.stderr
        assert "a safetensors output could not be read back" in result.stderr and "wdtmp" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.bin"]
    assert run_cli("convert", source, "-o", tmp_path / "out.bin", "--to", "bin").exit_code == 0
    assert name in torch.load(tmp_path / "out.bin", weights_only=True)


def test_a_kohya_lora_s_data_hash_is_not_carried_past_a_cast(tmp_path: Path) -> None:
    """kohya's `sshs_model_hash` / `sshs_legacy_hash` (and `modelspec.hash_sha256`) hash the tensor data; A1111
    names the LoRA by it. A cast changes the data, so they are dropped, with a warning; a plain copy keeps them."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.lora_down.weight": torch.randn(4, 8), "lora_unet_down.alpha": torch.tensor(4.0)},
              source, metadata={"format": "pt", "ss_network_dim": "4", "sshs_model_hash": "ab12",
                                "sshs_legacy_hash": "cd34", "modelspec.hash_sha256": "0xef56"})
    for command, extra, out in [("convert", [], "half.safetensors"), ("shard", ["--single"], "half-folder")]:
        code, data = run_json(command, str(source), "-o", str(tmp_path / out), "--dtype", "fp16", *extra)
        assert code == 0, data
        written = tmp_path / out if out.endswith(".safetensors") else tmp_path / out / "model.safetensors"
        with safe_open(str(written), "pt") as handle:
            assert handle.metadata() == {"format": "pt", "ss_network_dim": "4"}
        said = ("the source's sshs_model_hash, sshs_legacy_hash, modelspec.hash_sha256 are hashes of its tensor data, "
                "which the cast changes: not carried")
        assert any(w.startswith(said) for w in data["plan"]["warnings"])
    code, data = run_json("convert", str(source), "-o", str(tmp_path / "copy.safetensors"))
    assert code == 0 and not any("hash" in w for w in data["plan"]["warnings"])
    with safe_open(str(tmp_path / "copy.safetensors"), "pt") as handle:
        assert handle.metadata()["sshs_model_hash"] == "ab12"


def test_the_source_s_safetensors_metadata_is_carried_or_its_loss_is_said(tmp_path: Path) -> None:
    """A kohya LoRA's training settings or a `modelspec.*` header live in the safetensors metadata: a cast or
    a reshard keeps them; a .bin cannot hold them, and the warning says which are lost."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.lora_down.weight": torch.randn(4, 8), "lora_unet_down.alpha": torch.tensor(4.0)},
              source, metadata={"format": "pt", "ss_network_dim": "4", "modelspec.title": "test"})
    code, data = run_json("convert", str(source), "-o", str(tmp_path / "half.safetensors"), "--dtype", "float16")
    assert code == 0, data
    with safe_open(str(tmp_path / "half.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt", "ss_network_dim": "4", "modelspec.title": "test"}
    # --metadata wins over the source's value for the same key.
    code, _ = run_json("convert", str(source), "-o", str(tmp_path / "meta.safetensors"), "--metadata",
                       "ss_network_dim=8")
    with safe_open(str(tmp_path / "meta.safetensors"), "pt") as handle:
        assert handle.metadata()["ss_network_dim"] == "8" and handle.metadata()["modelspec.title"] == "test"
    code, data = run_json("convert", str(source), "-o", str(tmp_path / "lora.bin"))
    assert code == 0 and any(
        "the source's modelspec.title, ss_network_dim are not written" in w for w in data["plan"]["warnings"])
    # huggingface_hub's record of a tied tensor it left out names tensors: written into the .bin as that tensor's
    # storage under the recorded name, as torch.save writes a tied state dict (users23), so not said as lost.
    tied = tmp_path / "tied.safetensors"
    save_file({"transformer.wte.weight": torch.randn(4, 2)}, tied,
              metadata={"format": "pt", "lm_head.weight": "transformer.wte.weight", "ss_network_dim": "4"})
    code, data = run_json("convert", str(tied), "-o", str(tmp_path / "tied.bin"))
    assert code == 0 and "a .bin file holds no metadata: the source's ss_network_dim is not written" \
        in data["plan"]["warnings"]
    written = torch.load(tmp_path / "tied.bin", weights_only=True)
    assert written["lm_head.weight"].untyped_storage().data_ptr() == \
        written["transformer.wte.weight"].untyped_storage().data_ptr()
    code, data = run_json("shard", str(source), "--max", "100B", "-o", str(tmp_path / "shards"))
    assert code == 0 and len(data["plan"]["shards"]) == 2
    for shard in data["plan"]["shards"]:
        with safe_open(str(tmp_path / "shards" / shard["filename"]), "pt") as handle:
            assert handle.metadata()["modelspec.title"] == "test"


def test_renames_touch_only_the_metadata_records_that_name_tensors(tmp_path: Path) -> None:
    """huggingface_hub records a dropped shared tensor as {dropped: kept}: those follow --strip-prefix; a
    setting whose text happens to hold the prefix stays as it is, and no entry is lost to a collision."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = tmp_path / "model.safetensors"
    save_file({"model.embed.weight": torch.randn(4, 2), "model.head.bias": torch.zeros(4)}, source,
              metadata={"format": "pt", "model.head.weight": "model.embed.weight", "model.note": "model.v2",
                        "head.weight": "kept", "run": "model.embed.weight was trained"})
    code, data = run_json("convert", str(source), "-o", str(tmp_path / "out.safetensors"), "--strip-prefix", "model.")
    assert code == 0, data
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as handle:
        assert set(handle.keys()) == {"embed.weight", "head.bias"}
        assert handle.metadata() == {"format": "pt", "model.head.weight": "embed.weight", "model.note": "model.v2",
                                     "head.weight": "kept", "run": "model.embed.weight was trained"}


@pytest.mark.parametrize(("dtype", "expected"), [
    ("float32", "diffusion_pytorch_model.safetensors"), ("bfloat16", "diffusion_pytorch_model.bf16.safetensors"),
    ("float16", "diffusion_pytorch_model.fp16.safetensors")])
def test_a_cast_renames_a_diffusers_dtype_variant(tmp_path: Path, dtype: str, expected: str) -> None:
    """`diffusion_pytorch_model.fp16.safetensors` cast to float32 must not keep a name that says fp16:
    diffusers would load it as the fp16 variant."""
    from safetensors.torch import save_file

    unet = tmp_path / "unet"
    unet.mkdir()
    save_file({"conv.weight": torch.randn(4, 4).half()}, unet / "diffusion_pytorch_model.fp16.safetensors")
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    code, data = run_json("convert", str(unet), "-o", str(tmp_path / "out"), "--dtype", dtype)
    assert code == 0, data
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(["config.json", expected])
    assert load_file(tmp_path / "out" / expected)["conv.weight"].dtype == getattr(torch, dtype)


def test_a_cast_names_the_weight_files_it_copies_uncast(tmp_path: Path) -> None:
    """A sentence-transformers folder keeps a Dense module's weights in 2_Dense/: copied, not cast, and said."""
    from safetensors.torch import save_file

    folder = tmp_path / "st"
    (folder / "2_Dense").mkdir(parents=True)
    save_file({"embeddings.word_embeddings.weight": torch.randn(10, 4)}, folder / "model.safetensors")
    save_file({"linear.weight": torch.randn(4, 4)}, folder / "2_Dense" / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "dtype": "float32"}))
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "out"), "--dtype", "float16")
    assert code == 0, data
    assert any("config.json follows the cast" in w and
               "not cast to float16: 2_Dense/model.safetensors" in w for w in data["plan"]["warnings"])
    assert load_file(tmp_path / "out" / "2_Dense" / "model.safetensors")["linear.weight"].dtype == torch.float32
    assert load_file(tmp_path / "out" / "model.safetensors")["embeddings.word_embeddings.weight"].dtype == \
        torch.float16


def test_tied_weights_keep_save_pretrained_names_when_the_config_names_no_architecture(tmp_path: Path) -> None:
    """`BartConfig.save_pretrained` writes no `architectures`: the class whose keys hold every tensor name
    (BartForConditionalGeneration, not AutoModel's BartModel) decides, so `model.shared.weight` is kept
    and a BartModel loads the output with no missing embeddings."""
    from safetensors import safe_open
    from transformers import BartConfig, BartForConditionalGeneration, BartModel

    config = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)
    torch.manual_seed(0)
    model = BartForConditionalGeneration(config).eval()
    source = tmp_path / "bart-bin"
    config.save_pretrained(source)
    assert "architectures" not in json.loads((source / "config.json").read_text()) or not json.loads(
        (source / "config.json").read_text())["architectures"]
    torch.save(model.state_dict(), source / "pytorch_model.bin")
    model.save_pretrained(tmp_path / "reference")
    code, data = run_json("convert", str(source), "-o", str(tmp_path / "out"))
    assert code == 0, data
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as ours, \
            safe_open(str(tmp_path / "reference" / "model.safetensors"), "pt") as reference:
        kept = set(ours.keys())
        assert kept == set(reference.keys()) and "model.shared.weight" in kept
    _, info = BartModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not [k for k in info["missing_keys"] if "embed_tokens" in k or "shared" in k], info


def test_transformers_own_log_lines_stay_off_stderr(tmp_path: Path) -> None:
    """A tiny config whose bos_token_id lies outside its vocabulary makes transformers log a warning when
    the model is built (to choose tied weights): about its internals, not the checkpoint; not shown."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.helpers import run_subprocess

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=99, n_positions=16)  # bos/eos 50256
    source = tmp_path / "gpt2-bin"
    config.save_pretrained(source)
    torch.save(GPT2LMHeadModel(config).state_dict(), source / "pytorch_model.bin")
    result = run_subprocess("convert", source, "-o", tmp_path / "out", env={"TRANSFORMERS_VERBOSITY": ""})
    assert result.returncode == 0, result.stderr
    assert "[transformers]" not in result.stderr and "bos_token_id" not in result.stderr, result.stderr


def test_a_quoted_tilde_in_the_output_is_the_home_folder(fx: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o '~/out'` (quoted, so the shell left it) writes under $HOME, as `~` in SOURCE reads from it; it never
    makes a folder named `~` in the current directory."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    code, data = run_json("convert", fx["files"] / "bert.bin", "-o", "~/bert.safetensors")
    assert code == 0, data
    code, data = run_json("shard", fx["files"] / "bert.bin", "--max", "10KB", "-o", "~/sharded")
    assert code == 0, data
    assert (home / "bert.safetensors").is_file() and (home / "sharded" / "model.safetensors.index.json").is_file()
    assert list(work.iterdir()) == []


def test_a_dtype_cast_leaves_a_quantizer_s_scales_as_stored(tmp_path: Path) -> None:
    """GPTQ's fp16 `scales` and fine-grained FP8's fp32 `weight_scale_inv` are read by the quantizer as they
    are: `--dtype bf16` casts the plain weights and leaves them bit-exact, and check-dtype does not cast them."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "gptq"
    folder.mkdir()
    tensors = {"proj.qweight": torch.zeros(4, 16, dtype=torch.int32),
               "proj.qzeros": torch.zeros(1, 2, dtype=torch.int32),
               "proj.scales": (torch.rand(1, 16) * 1e-3).half(), "norm.weight": torch.rand(16).half()}
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": 32}}))
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "out"), "--dtype", "bf16", "--allow-overflow")
    assert code == 0, data
    out = load_file(tmp_path / "out" / "model.safetensors")
    assert out["proj.scales"].dtype == torch.float16 and torch.equal(out["proj.scales"], tensors["proj.scales"])
    assert out["norm.weight"].dtype == torch.bfloat16
    assert any("1 quantizer scale/state tensor kept as stored" in w for w in data["plan"]["warnings"])
    code, data = run_json("check-dtype", str(folder))
    assert "proj.scales" not in {t["name"] for t in data["targets"]["bf16"]["tensors"]}


@pytest.mark.parametrize("command", ["convert", "shard"])
@pytest.mark.parametrize(("flags", "shown"), [
    (["--strip-prefix", "module."], "--rename '^module\\.='"),
    (["--rename", "bert\\.=", "--rename", "bert\\.="], "--rename 'bert\\.='"),
])
def test_a_rename_that_changes_no_name_writes_nothing(fx: dict[str, Path], tmp_path: Path, command: str,
                                                      flags: list[str], shown: str) -> None:
    """A typo in --strip-prefix (or a rename whose keys an earlier one already changed) wrote the checkpoint
    unchanged with exit 0; now exit 2 naming the rename, and no output."""
    out = tmp_path / "out"
    extra = ["--max", "400KB"] if command == "shard" else []
    result = run_cli(command, fx["bert"], "-o", out, *extra, *flags)
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.startswith(f"error: the rename {shown} changes no tensor name") and \
        len(result.stderr.strip().splitlines()) == 1
    # The same rename once, where it matches, is applied.
    assert run_cli(command, fx["bert"], "-o", out, *extra, "--rename", "bert\\.=").exit_code == 0


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
@pytest.mark.parametrize("pattern", ["lm_head", "wte"])
def test_keep_fp32_on_one_name_of_tied_weights_keeps_their_one_storage_in_fp32(
    fx: dict[str, Path], tmp_path: Path, fmt: str, pattern: str
) -> None:
    """GPT-2's lm_head.weight and transformer.wte.weight are one storage. `--keep-fp32 lm_head` planned lm_head
    in fp32 and wte in bf16: a .bin output (both names, one storage) failed its own verification (exit 2), and a
    safetensors output, lm_head dropped, kept nothing in fp32. One storage has one dtype: a match on any name."""
    out = tmp_path / ("out.bin" if fmt == "bin" else "out.safetensors")
    code, data = run_json("convert", fx["files"] / "gpt2-tied.bin", "-o", out, "--dtype", "bf16",
                          "--keep-fp32", pattern)
    assert code == 0, data
    written = torch.load(out, weights_only=True) if fmt == "bin" else load_file(out)
    tied = [written[n] for n in ("lm_head.weight", "transformer.wte.weight") if n in written]
    assert len(tied) == (2 if fmt == "bin" else 1)
    assert all(t.dtype == torch.float32 for t in tied)
    assert len({t.untyped_storage().data_ptr() for t in tied}) == 1
    assert written["transformer.h.0.attn.c_attn.weight"].dtype == torch.bfloat16
    assert set(data["plan"]["kept_fp32"]) == set(n for n in ("lm_head.weight", "transformer.wte.weight")
                                                 if n in written)
    assert any("one storage" in w and "kept in fp32" in w for w in data["plan"]["warnings"]), data["plan"]["warnings"]


@pytest.mark.parametrize("output", ["merged.safetensors", "merged.bin"])
def test_a_sharded_folder_to_a_file_name_merges_its_shards_into_that_file(
        fx: dict[str, Path], tmp_path: Path, output: str) -> None:
    """`convert SHARDED_DIR -o merged.safetensors` writes one file holding every shard's tensors; it wrote a
    folder named merged.safetensors, which safe_open and torch.load then fail on."""
    from safetensors.torch import load_file

    source = fx["bert-sharded-bin"]
    index = json.loads((source / "pytorch_model.bin.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # the case in point
    out = tmp_path / output
    code, data = run_json("convert", source, "-o", out)
    assert code == 0, data
    assert out.is_file() and [f["filename"] for f in data["plan"]["files"]] == [output]
    assert any("merging the" in w and "shards into one file" in w for w in data["plan"]["warnings"])
    original: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        original.update(torch.load(source / shard, weights_only=True))
    merged = load_file(out) if output.endswith(".safetensors") else torch.load(out, weights_only=True)
    assert merged.keys() == original.keys()
    assert all(torch.equal(merged[k], original[k]) for k in original)


def test_allow_overflow_on_a_bin_output_names_every_tied_name_that_lost_values(tmp_path: Path) -> None:
    """A .bin output keeps tied names as one storage: `lost` (and the refusal) name both names, where they named
    only the one that owns the storage."""
    shared = torch.tensor([1.0, 70000.0, 2.0])
    torch.save({"wte.weight": shared, "lm_head.weight": shared, "ok": torch.ones(2)}, tmp_path / "in.bin")
    refused = run_cli("convert", tmp_path / "in.bin", "-o", tmp_path / "no.bin", "--dtype", "fp16")
    assert refused.exit_code == 2
    assert "wte.weight (and lm_head.weight: one storage) (1 value becomes inf)" in " ".join(refused.stderr.split())
    code, data = run_json("convert", tmp_path / "in.bin", "-o", tmp_path / "out.bin", "--dtype", "fp16",
                          "--allow-overflow")
    assert code == 0, data
    assert data["write"]["lost"] == ["wte.weight (and lm_head.weight: one storage) (1 value becomes inf)"]
    back = torch.load(tmp_path / "out.bin", weights_only=True)
    assert torch.isinf(back["lm_head.weight"]).sum() == 1 and back["lm_head.weight"].data_ptr() == \
        back["wte.weight"].data_ptr()


def test_an_output_named_without_an_extension_is_said(fx: dict[str, Path], tmp_path: Path) -> None:
    """`-o conv` wrote one safetensors file called `conv` without a word: no loader looks for that name."""
    code, data = run_json("convert", str(fx["files"] / "bert.bin"), "-o", str(tmp_path / "conv"))
    assert code == 0 and (tmp_path / "conv").is_file()
    assert any(w.startswith("conv has no weight-file extension") and "conv.safetensors" in w
               for w in data["plan"]["warnings"]), data["plan"]["warnings"]
    code, data = run_json("convert", str(fx["files"] / "bert.bin"), "-o", str(tmp_path / "named.safetensors"))
    assert code == 0 and not any("extension" in w for w in data["plan"]["warnings"])
