"""`weightdoctor shard`: huggingface_hub's splitting rules, both size units, re-sharding, merging, and
the sharded folder read back by transformers, huggingface_hub and safetensors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import run_cli, run_json
from tests.test_convert_cli import assert_same_model


def _state_dict(folder: Path) -> dict[str, torch.Tensor]:
    result: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        result.update(load_file(path))
    for path in sorted(folder.glob("*.bin")):
        result.update(torch.load(path, weights_only=True))
    return result


def test_split_matches_huggingface_hub_and_transformers_loads_it(fx: dict[str, Path], tmp_path: Path) -> None:
    from huggingface_hub import split_torch_state_dict_into_shards

    out = tmp_path / "bert"
    code, data = run_json("shard", fx["bert"], "--max", "40KB", "-o", out)
    assert code == 0 and data["write"]["verified"] is True
    original = load_file(fx["bert"] / "model.safetensors")
    expected = split_torch_state_dict_into_shards(original, max_shard_size="40KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == expected.tensor_to_filename
    assert index["metadata"]["total_size"] == expected.metadata["total_size"]
    assert [s["filename"] for s in data["plan"]["shards"]] == list(expected.filename_to_tensors)
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected.filename_to_tensors, "config.json",
                                                             "model.safetensors.index.json"])
    for filename, names in expected.filename_to_tensors.items():
        shard = load_file(out / filename)
        assert set(shard) == set(names) and all(torch.equal(shard[n], original[n]) for n in names)
    assert_same_model(out, fx["bert"])
    from huggingface_hub import load_torch_model
    from transformers import AutoConfig, BertForSequenceClassification

    with torch.device("meta"):
        model = BertForSequenceClassification(AutoConfig.from_pretrained(out))
    model = model.to_empty(device="cpu")
    load_torch_model(model, out, strict=True)
    assert torch.equal(model.classifier.weight, original["classifier.weight"])


def test_decimal_and_binary_units_give_different_limits_and_the_dry_run_says_which(
    fx: dict[str, Path], tmp_path: Path
) -> None:
    code, decimal = run_json("shard", fx["bert"], "--max", "20KB", "-o", tmp_path / "a", "--dry-run")
    code2, binary = run_json("shard", fx["bert"], "--max", "20KiB", "-o", tmp_path / "b", "--dry-run")
    assert code == code2 == 0
    assert (decimal["plan"]["max_bytes"], decimal["plan"]["units"]) == (20_000, "decimal")
    assert (binary["plan"]["max_bytes"], binary["plan"]["units"]) == (20_480, "binary")
    assert all(s["size_bytes"] <= 20_000 or s["oversized"] for s in decimal["plan"]["shards"])
    result = run_cli("shard", fx["bert"], "--max", "20KiB", "-o", tmp_path / "b", "--dry-run")
    assert "20KiB = 20,480 bytes (binary units)" in result.stdout
    assert "model-00001-of-" in result.stdout and "bert.embeddings" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_tensor_larger_than_max_gets_its_own_shard_with_a_warning(fx: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("shard", fx["bert"], "--max", "5KB", "-o", tmp_path / "o", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    big = [s for s in data["plan"]["shards"] if s["oversized"]]
    assert big and all(s["num_tensors"] == 1 for s in big)
    assert "bert.embeddings.word_embeddings.weight" in {s["first"] for s in big}
    # One line for all of them, the largest named first, not one line per tensor.
    lines = [line for line in result.stderr.splitlines() if "larger than --max" in line]
    assert len(lines) == 1 and f"{len(big)} tensors are larger than --max 5KB: each gets a shard of its own" in lines[0]
    assert "(bert.embeddings.word_embeddings.weight (" in lines[0]
    sizes = sorted((s["size_bytes"] for s in data["plan"]["shards"]), reverse=True)
    limit = str(sizes[1] + 1)  # only the largest tensor passes it
    one = run_cli("shard", fx["bert"], "--max", limit, "-o", tmp_path / "one")
    assert one.exit_code == 0, one.stderr
    assert f"is larger than --max {limit}: it gets a shard of its own" in one.stderr, one.stderr


def test_reshard_a_sharded_bin_source_and_merge_back_into_one_file(fx: dict[str, Path], tmp_path: Path) -> None:
    original = _state_dict(fx["bert-sharded-bin"])
    code, data = run_json("shard", fx["bert-sharded-bin"] / "pytorch_model.bin.index.json", "--max", "20KB",
                          "-o", tmp_path / "re")
    assert code == 0 and len(data["plan"]["shards"]) > 3
    resharded = _state_dict(tmp_path / "re")
    assert resharded.keys() == original.keys() and all(torch.equal(resharded[k], original[k]) for k in original)
    for flag in (["--max", "0"], ["--single"]):
        out = tmp_path / ("merged" + flag[0])
        code, data = run_json("shard", tmp_path / "re", *flag, "-o", out)
        assert code == 0 and data["plan"]["index"] is None and data["plan"]["max_bytes"] is None
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
        merged = load_file(out / "model.safetensors")
        assert merged.keys() == original.keys() and all(torch.equal(merged[k], original[k]) for k in original)
    assert_same_model(tmp_path / "merged--single", fx["bert-sharded-bin"])


def test_bin_format_writes_pytorch_model_shards_that_transformers_loads(fx: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gpt2"
    code, data = run_json("shard", fx["gpt2"], "--max", "40KB", "--format", "bin", "-o", out)
    assert code == 0
    assert data["plan"]["index"] == "pytorch_model.bin.index.json"
    assert all(s["filename"].startswith("pytorch_model-") for s in data["plan"]["shards"])
    assert_same_model(out, fx["gpt2"])


def test_force_replaces_an_earlier_save_but_keeps_unrelated_files(fx: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("shard", fx["bert"], "--max", "20KB", "-o", out).exit_code == 0
    (out / "notes.md").write_text("mine")
    earlier = sorted(p.name for p in out.glob("model-*"))
    result = run_cli("shard", fx["bert"], "--max", "40KB", "-o", out)
    assert result.exit_code == 2 and "output exists; pass --force" in result.stderr
    code, data = run_json("shard", fx["bert"], "--max", "40KB", "-o", out, "--force")
    assert code == 0
    now = sorted(p.name for p in out.glob("model-*"))
    assert len(now) < len(earlier) and all(n.endswith(f"-of-{len(now):05d}.safetensors") for n in now)
    assert (out / "notes.md").read_text() == "mine"
    assert data["write"]["carried_over"] == ["notes.md"]
    assert set(data["write"]["replaced"]) == set(earlier) - set(now)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert_same_model(out, fx["bert"])


def test_bad_sizes_and_flag_combinations_exit_2_with_one_line(fx: dict[str, Path], tmp_path: Path) -> None:
    for args, message in (
        (["--max", "12 parsecs"], "cannot parse size '12 parsecs'"),
        (["--max", "10XB"], "unknown unit 'XB'"),
        (["--max", "10MB", "--single"], "--single and --max disagree"),
        ([], "give --max SIZE"),
        (["--max", "1MB", "--format", "gguf"], "--format 'gguf': choose one of safetensors, bin"),
    ):
        result = run_cli("shard", fx["bert"], "-o", tmp_path / "o", *args)
        assert result.exit_code == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_and_config_files_are_copied_but_stale_weights_are_not(fx: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    source = tmp_path / "model"
    shutil.copytree(fx["bert"], source)
    (source / "tokenizer.json").write_text('{"version": "1.0"}')
    (source / "special_tokens_map.json").write_text("{}")
    (source / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    torch.save({"x": torch.zeros(1)}, source / "optimizer.pt")
    (source / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (source / ".cache" / "huggingface").mkdir(parents=True)
    (source / ".cache" / "huggingface" / "x.lock").write_text("")
    # sentence-transformers keeps modules in subfolders; they are copied whole.
    (source / "1_Pooling").mkdir()
    (source / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    code, data = run_json("shard", source, "--max", "50KB", "-o", tmp_path / "out")
    assert code == 0
    assert data["plan"]["copied"] == [".gitattributes", "1_Pooling/config.json", "config.json",
                                      "special_tokens_map.json", "tokenizer.json", "vocab.txt"]
    assert any(w.startswith("not copied: .cache/ (hidden folder), optimizer.pt (training state, not part of the model)")
               for w in data["plan"]["warnings"]), data["plan"]["warnings"]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [".gitattributes", "1_Pooling", "config.json", "model-00001-of-00002.safetensors",
                     "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
                     "tokenizer.json", "vocab.txt"]
    assert (tmp_path / "out" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    assert (tmp_path / "out" / "1_Pooling" / "config.json").read_text() == '{"pooling_mode_mean_tokens": true}'


@pytest.mark.parametrize("command", [["shard", "--max", "20KB"], ["convert"]])
def test_an_output_inside_the_source_folder_is_not_copied_into_the_next_run(
    fx: dict[str, Path], tmp_path: Path, command: list[str],
) -> None:
    model = tmp_path / "model"
    shutil.copytree(fx["bert"], model)
    for _ in range(3):
        code, data = run_json(command[0], model, *command[1:], "-o", model / "out", "--force")
        assert code == 0, data
    assert not (model / "out" / "out").exists()

    def side(folder: Path) -> set[str]:
        return {p.name for p in folder.iterdir() if p.name != "out" and not p.name.endswith((".safetensors", ".json"))
                or p.name == "config.json"}

    assert side(model / "out") == side(model) and "config.json" in side(model)


def test_diffusers_and_peft_folders_keep_their_library_s_file_names(tmp_path: Path) -> None:
    """diffusers loads `diffusion_pytorch_model*.safetensors` (its save_pretrained's shard names), PEFT
    `adapter_model.safetensors`: shards named `model-*` would not be found by either."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = {f"down_blocks.{i}.conv.weight": torch.randn(16, 16, 3, 3) for i in range(4)}
    unet = tmp_path / "unet"
    unet.mkdir()
    save_file(weights, unet / "diffusion_pytorch_model.safetensors")
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    code, data = run_json("shard", str(unet), "--max", "20KB", "-o", str(tmp_path / "out"))
    assert code == 0, data
    # The names huggingface_hub's splitter gives diffusers' pattern (what diffusers' save_pretrained writes).
    expected = split_torch_state_dict_into_shards(
        weights, filename_pattern="diffusion_pytorch_model{suffix}.safetensors", max_shard_size=20_000)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == sorted(expected.filename_to_tensors)
    index = json.loads((tmp_path / "out" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert index["weight_map"] == expected.tensor_to_filename
    assert not list((tmp_path / "out").glob("model*"))
    written = _state_dict(tmp_path / "out")
    assert all(torch.equal(written[k], v) for k, v in weights.items()) and len(written) == 4

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file({f"base_model.model.q.{i}.lora_A.weight": torch.randn(4, 1024) for i in range(3)},
              adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    code, data = run_json("shard", str(adapter), "--max", "20KB", "-o", str(tmp_path / "adapter-out"))
    assert code == 0, data
    assert [s["filename"] for s in data["plan"]["shards"]] == [
        f"adapter_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert any("peft loads an adapter from one adapter_model file" in w for w in data["plan"]["warnings"])
    # One file (--single): PEFT's own name, no warning.
    code, data = run_json("shard", str(adapter), "--single", "-o", str(tmp_path / "adapter-one"))
    assert code == 0 and (tmp_path / "adapter-one" / "adapter_model.safetensors").is_file()
    assert not any("peft" in w for w in data["plan"]["warnings"])


def test_a_mistral_native_folder_shards_under_mistral_s_own_names(tmp_path: Path) -> None:
    """Mistral's `consolidated.safetensors` + `params.json` shards as Mistral-Large ships
    (`consolidated-0000i-of-0000n.safetensors` + `consolidated.safetensors.index.json`, what vLLM's mistral
    format globs); `model-*` beside params.json and no config.json is read by no loader. A .bin keeps
    transformers' names (Mistral ships no .bin of this layout)."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = {f"layers.{i}.attention.wq.weight": torch.randn(32, 64).to(torch.bfloat16) for i in range(4)}
    folder = tmp_path / "mistral"
    folder.mkdir()
    save_file(weights, folder / "consolidated.safetensors")
    (folder / "params.json").write_text(json.dumps({"dim": 64, "n_layers": 4}))
    code, data = run_json("shard", str(folder), "--max", "10KB", "-o", str(tmp_path / "out"))
    assert code == 0, data
    expected = split_torch_state_dict_into_shards(
        weights, filename_pattern="consolidated{suffix}.safetensors", max_shard_size=10_000)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(expected.filename_to_tensors)
    assert json.loads((out / "consolidated.safetensors.index.json").read_text())["weight_map"] == \
        expected.tensor_to_filename
    assert not list(out.glob("model*")) and (out / "params.json").is_file()
    # Re-sharding the sharded folder keeps the names; back to one file is consolidated.safetensors again.
    code, data = run_json("shard", str(out), "--single", "-o", str(tmp_path / "one"))
    assert code == 0 and sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "consolidated.safetensors", "params.json"]
    written = load_file(tmp_path / "one" / "consolidated.safetensors")
    assert written.keys() == weights.keys() and all(torch.equal(written[k], v) for k, v in weights.items())
    code, data = run_json("shard", str(folder), "--max", "10KB", "--format", "bin", "-o", str(tmp_path / "bin"))
    assert code == 0 and (tmp_path / "bin" / "pytorch_model.bin.index.json").is_file()


def test_sharding_a_single_file_only_sd_checkpoint_says_no_loader_reads_the_shards(tmp_path: Path) -> None:
    """A kohya LoRA and a CivitAI-style single-file model are read from one file by every tool that loads them
    (A1111, ComfyUI, diffusers' from_single_file / load_lora_weights): shards of them were written silently."""
    from safetensors.torch import save_file

    lora = tmp_path / "lora.safetensors"
    save_file({f"lora_unet_down_blocks_0_attentions_{i}_proj_in.lora_down.weight": torch.zeros(4, 64)
               for i in range(3)}, lora, metadata={"ss_network_module": "networks.lora"})
    single = tmp_path / "mix.safetensors"
    save_file({f"model.diffusion_model.input_blocks.{i}.0.weight": torch.zeros(4, 64) for i in range(3)}, single)
    # A LoRA is applied by LoRA loaders, a checkpoint loaded by from_single_file (which loads no LoRA).
    for source, kind, loaders in [(lora, "a kohya-style LoRA", "AUTOMATIC1111, ComfyUI, diffusers' load_lora_weights"),
                                  (single, "a single-file Stable Diffusion checkpoint",
                                   "AUTOMATIC1111, ComfyUI, diffusers' from_single_file")]:
        code, data = run_json("shard", str(source), "--max", "1KB", "-o", str(tmp_path / source.stem))
        assert code == 0 and len(data["plan"]["shards"]) == 3
        assert f"{kind} is loaded from one file ({loaders}): none of them reads an index or these shards" \
            in data["plan"]["warnings"], data["plan"]["warnings"]
        code, data = run_json("shard", str(source), "--single", "-o", str(tmp_path / f"{source.stem}-one"))
        assert code == 0 and not any("loaded from one file" in w for w in data["plan"]["warnings"])


def test_the_index_total_size_is_always_the_bytes_written(tmp_path: Path) -> None:
    """A source file's header may carry a `total_size` record of its own; `--metadata total_size=` is
    reserved: the index always says the bytes it indexes, as an integer."""
    from safetensors.torch import save_file

    source = tmp_path / "meta.safetensors"
    save_file({"a.weight": torch.zeros(16), "b.weight": torch.zeros(16)}, source,
              metadata={"format": "pt", "total_size": "5", "note": "kept"})
    code, data = run_json("shard", source, "--max", "70B", "-o", tmp_path / "out")
    assert code == 0, data
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 128 and index["metadata"]["note"] == "kept"
    result = run_cli("shard", source, "--max", "70B", "-o", tmp_path / "other", "--metadata", "total_size=1")
    assert result.exit_code == 2 and "total_size=... is reserved" in result.stderr


def test_the_index_records_what_save_pretrained_records(tmp_path: Path) -> None:
    """transformers 5's save_pretrained(max_shard_size=...) writes `total_size` and `total_parameters`
    (tied weights once): sharding the same model's .bin at the same size gives the same metadata and map."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=99, n_positions=32))
    model.save_pretrained(tmp_path / "reference", max_shard_size="20KB")
    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    shutil.copy(tmp_path / "reference" / "config.json", tmp_path / "bin")  # which name of the tied pair is kept
    code, data = run_json("shard", tmp_path / "bin", "--max", "20KB", "-o", tmp_path / "ours")
    assert code == 0, data
    ours = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    reference = json.loads((tmp_path / "reference" / "model.safetensors.index.json").read_text())
    # Plus the dropped alias, recorded as huggingface_hub's save_torch_state_dict records it.
    assert ours["metadata"] == {**reference["metadata"], "lm_head.weight": "transformer.wte.weight"}
    assert ours["weight_map"] == reference["weight_map"]


@pytest.mark.parametrize(("args", "variant"),
                         [([], "fp16"), (["--dtype", "bf16"], "bf16"), (["--format", "bin"], "fp16")])
def test_a_sharded_dtype_variant_keeps_its_variant_as_convert_does(
    tmp_path: Path, args: list[str], variant: str
) -> None:
    """save_pretrained(variant="fp16") names its shards model.fp16-*.safetensors and its index
    model.safetensors.index.fp16.json; resharded, they were renamed as the plain weights (model-*), which
    from_pretrained(variant="fp16") does not find and from_pretrained() takes for the plain ones."""
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=48, max_position_embeddings=64)).half()
    model.save_pretrained(tmp_path / "src", variant="fp16", max_shard_size="20KB")
    code, data = run_json("shard", str(tmp_path / "src"), "--max", "30KB", "-o", str(tmp_path / "out"), *args)
    assert code == 0, data
    stem, extension = ("pytorch_model", "bin") if "bin" in args else ("model", "safetensors")
    assert data["plan"]["index"] == f"{stem}.{extension}.index.{variant}.json"
    assert all(s["filename"].startswith(f"{stem}.{variant}-") for s in data["plan"]["shards"])
    loaded, info = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out", variant=variant,
                                                                 output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(loaded.model.norm.weight.float(), model.model.norm.weight.float())


def test_resharding_a_sharded_folder_follows_its_shards_in_order(tmp_path: Path) -> None:
    """A sharded source's tensors come shard after shard (model-00001, -00002, ...), as its writer laid them
    out: resharded, the split is huggingface_hub's over that order. It took the shards in the order of their
    first key in the (sorted) weight_map, which mixed the end of the model into the first shard."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=99, n_positions=32))
    model.save_pretrained(tmp_path / "src", max_shard_size="20KB")
    weight_map = json.loads((tmp_path / "src" / "model.safetensors.index.json").read_text())["weight_map"]
    assert weight_map[next(iter(weight_map))] != min(weight_map.values())  # the case in point
    in_order: dict[str, torch.Tensor] = {}
    for path in sorted((tmp_path / "src").glob("model-*.safetensors")):
        in_order.update(load_file(path))
    code, data = run_json("shard", tmp_path / "src", "--max", "30KB", "-o", tmp_path / "out")
    assert code == 0, data
    expected = split_torch_state_dict_into_shards(in_order, max_shard_size="30KB")
    ours = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert ours["weight_map"] == expected.tensor_to_filename
    assert [s["first"] for s in data["plan"]["shards"]] == [v[0] for v in expected.filename_to_tensors.values()]


def test_a_safetensors_source_is_split_layer_after_layer(tmp_path: Path) -> None:
    """A safetensors header sorts names as strings (`layers.10` before `layers.2`): split in that order, twelve
    layers would land 0, 1, 10, 11, 2, ...; split in natural name order each shard holds consecutive layers, as
    save_pretrained's own split (in the modules' order) does."""
    import re

    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import LlamaConfig, LlamaForCausalLM

    from weightdoctor.checkpoint.reader import natural_order

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=12,
                                         num_attention_heads=2, num_key_value_heads=1))
    model.save_pretrained(tmp_path / "src")
    model.save_pretrained(tmp_path / "theirs", max_shard_size="40KB")
    code, data = run_json("shard", tmp_path / "src", "--max", "40KB", "-o", tmp_path / "ours")
    assert code == 0 and data["write"]["verified"] is True
    weight_map = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())["weight_map"]
    original = load_file(tmp_path / "src" / "model.safetensors")
    in_order = {name: original[name] for name in sorted(original, key=natural_order)}
    assert weight_map == split_torch_state_dict_into_shards(in_order, max_shard_size="40KB").tensor_to_filename

    def layers_by_shard(index: Path) -> list[list[int]]:
        shards: dict[str, set[int]] = {}
        for name, filename in json.loads(index.read_text())["weight_map"].items():
            found = re.search(r"\.layers\.(\d+)\.", name)
            shards.setdefault(filename, set()).update([int(found[1])] if found else [])
        return [sorted(layers) for _, layers in sorted(shards.items())]

    ours = layers_by_shard(tmp_path / "ours" / "model.safetensors.index.json")
    assert ours == layers_by_shard(tmp_path / "theirs" / "model.safetensors.index.json")
    assert [layer for layers in ours for layer in layers] == sorted(layer for layers in ours for layer in layers)
