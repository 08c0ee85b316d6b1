"""Checkpoints as other tools write them: DeepSpeed, training scripts, fused-matrix views, tied weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.security.policy import classify


@pytest.mark.parametrize(("value", "global_name"), [
    (set(), "set"), ({"a", "b"}, "set"), (complex(1, 2), "complex"), (bytearray(b"xy"), "bytearray")])
def test_protocol_2_builtins_are_safe(tmp_path: Path, value: object, global_name: str) -> None:
    """torch.save writes protocol 2, where a set is `__builtin__.set`: what torch's weights_only loader allows."""
    path = tmp_path / "mp_rank_00_model_states.pt"
    # DeepSpeed keeps the model under "module" beside sets of names and other values.
    torch.save({"module": {"w": torch.ones(2), "b": torch.zeros(3)}, "extra": value}, path)
    assert f"__builtin__\n{global_name}".encode() in path.read_bytes() or b"__builtin__" in path.read_bytes()
    torch.load(path, weights_only=True)  # the reference: torch accepts it
    code, data = run_json("inspect", str(path), "--key", "module")
    assert code == 0, data
    assert data["security"]["verdict"] == "safe" and data["num_tensors"] == 2 and data["nested_key"] == "module"


def test_python_2_names_are_judged_by_what_they_load() -> None:
    assert classify("__builtin__", "set") == classify("builtins", "set") == "safe"
    assert classify("__builtin__", "eval") == "dangerous"
    assert classify("copy_reg", "_reconstructor") == "dangerous"  # copyreg stays refused
    # Read as a value since security4, in the form pickle writes it (frozenset(<list>)); other calls are refused by
    # the construction rules (tests/hostile/test_security4.py).
    assert classify("__builtin__", "frozenset") == classify("builtins", "frozenset") == "safe"
    assert classify("__builtin__", "range") == "unknown"  # set(range(10**12)): unbounded memory from three numbers


def test_slices_of_one_storage_are_separate_tensors(tmp_path: Path) -> None:
    """q, k and v saved as views of one fused matrix: three tensors of 64x64, not one tied tensor."""
    fused = torch.randn(192, 64)
    path = tmp_path / "qkv.bin"
    torch.save({"attn.q.weight": fused[:64], "attn.k.weight": fused[64:128], "attn.v.weight": fused[128:],
                "attn.q_again.weight": fused[:64]}, path)  # the last one is the same view as q: tied
    checkpoint = open_checkpoint(path)
    assert checkpoint.num_params == 3 * 64 * 64 and checkpoint.total_bytes == 3 * 64 * 64 * 4
    assert checkpoint.alias_groups() == [["attn.q.weight", "attn.q_again.weight"]]
    assert sorted(map(sorted, checkpoint.shared_groups())) == [
        ["attn.k.weight", "attn.q.weight", "attn.q_again.weight", "attn.v.weight"]]
    code, inspected = run_json("inspect", str(path))
    assert code == 0 and inspected["total_bytes"] == 49152 and inspected["memory"]["fp32"] == 49152
    code, plan = run_json("plan-devices", str(path), "--gpu", "20KB")
    assert plan["num_params"] == 12288 and plan["weights_bytes"] == 49152 and plan["verdict"] != "fits-on-gpus"


def test_tied_weights_count_once_in_every_format(fx: dict[str, Path], tmp_path: Path) -> None:
    """GPT-2's lm_head is wte: the .bin keeps both names, safetensors one; both count its parameters once."""
    tied = open_checkpoint(fx["files"] / "gpt2-tied.bin")
    assert ["transformer.wte.weight", "lm_head.weight"] in tied.alias_groups()
    code, _ = run_json("convert", str(fx["files"] / "gpt2-tied.bin"), "-o", str(tmp_path / "gpt2.safetensors"))
    assert code == 0
    converted = open_checkpoint(tmp_path / "gpt2.safetensors")
    names = {t.name for t in converted.tensors}
    assert len(names & {"lm_head.weight", "transformer.wte.weight"}) == 1  # one name kept, as safetensors needs
    assert (tied.num_params, tied.total_bytes) == (converted.num_params, converted.total_bytes)


def test_a_tie_between_top_level_names_is_planned(tmp_path: Path) -> None:
    shared = torch.randn(4, 4)
    path = tmp_path / "tied_top.bin"
    torch.save({"w": shared, "w2": shared, "layer.w": torch.randn(2)}, path)
    code, plan = run_json("plan-devices", str(path), "--gpu", "1GB")
    assert code == 0 and plan["verdict"] == "fits-on-gpus"
    assert any("w = w2" in w and "separate copies" in w for w in plan["warnings"]), plan["warnings"]


def test_sharded_bin_with_ties_matches_its_index(tmp_path: Path) -> None:
    """huggingface_hub counts a tied storage once in total_size: no false warning."""
    from huggingface_hub import save_torch_state_dict

    embedding = torch.randn(64, 32)
    state = {"wte.weight": embedding, "lm_head.weight": embedding,
             **{f"h.{i}.weight": torch.randn(32, 32) for i in range(4)}}
    save_torch_state_dict(state, tmp_path, safe_serialization=False, max_shard_size="10KB")
    index = json.loads((tmp_path / "pytorch_model.bin.index.json").read_text())
    code, data = run_json("inspect", str(tmp_path))
    assert code == 0 and data["warnings"] == [], data["warnings"]
    assert data["total_bytes"] == index["metadata"]["total_size"]


def test_tensors_beside_training_values_are_the_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "train.pt"
    torch.save({"w": torch.ones(2), "b": torch.ones(3), "epoch": 3, "loss": 0.25}, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0
    assert "non-tensor entries" in result.stdout and "epoch (int: 3)" in result.stdout
    code, data = run_json("inspect", str(path))
    assert data["num_tensors"] == 2 and data["num_params"] == 5


def test_key_indexes_into_lists(tmp_path: Path) -> None:
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "ema": [{"w": torch.ones(2), "v": torch.zeros(4)}]}, path)
    code, data = run_json("inspect", str(path), "--key", "ema.0")
    assert code == 0 and data["num_tensors"] == 2 and data["nested_key"] == "ema.0"
    result = run_cli("inspect", str(path), "--key", "ema.3")
    assert result.exit_code == 2 and "'3' is not an index of a list of 1 item" in result.stderr


@pytest.mark.parametrize(("tensor", "words"), [
    (torch.randn(4, 4).to_sparse(), "'sp' is a sparse (sparse_coo) tensor"),
    (torch.randn(4, 4).to_sparse_csr(), "'sp' is a sparse (sparse_csr) tensor"),
    # Two 4-bit values a byte: still refused (a qint8 one is listed as its int8 values since round quant3).
    (torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.quint4x2), "'sp' is a quantized"),
])
@pytest.mark.parametrize("command", [
    ["inspect"], ["inspect", "--stats"], ["check-dtype"], ["plan-devices", "--gpu", "1GB"]])
def test_sparse_and_quantized_tensors_are_one_clear_line(tmp_path: Path, tensor: torch.Tensor, words: str,
                                                         command: list[str]) -> None:
    path = tmp_path / "odd.bin"
    torch.save({"sp": tensor, "w": torch.randn(2)}, path)
    result = run_cli(command[0], str(path), *command[1:])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "odd.bin" in result.stderr and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Warning" not in result.stderr


def test_names_tied_in_b_that_a_stores_once_are_not_errors(tmp_path: Path) -> None:
    """T5 as a .bin keeps shared / encoder / decoder embeddings as one tensor; its safetensors keeps one name."""
    from safetensors.torch import save_file

    shared, rest = torch.randn(32, 8), torch.randn(8, 8)
    torch.save({"shared.weight": shared, "encoder.embed_tokens.weight": shared,
                "decoder.embed_tokens.weight": shared, "encoder.block.0.weight": rest}, tmp_path / "b.bin")
    a = {"shared.weight": shared.clone(), "encoder.block.0.weight": rest.clone()}
    save_file(a, str(tmp_path / "a.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.bin"))
    assert code == 0, data
    assert sorted((m["name"], m["reason"], m["severity"]) for m in data["missing"]) == [
        ("decoder.embed_tokens.weight", "tied-weight", "info"), ("encoder.embed_tokens.weight", "tied-weight", "info")]
    assert all("shared.weight" in m["detail"] for m in data["missing"])


def test_a_base_model_prefix_loads_only_into_a_transformers_model(tmp_path: Path) -> None:
    """`model.` on every key (Lightning): against a plain state dict nothing strips it (error); against a
    transformers model folder from_pretrained does (warn)."""
    weights = {"embed_tokens.weight": torch.randn(16, 4), "layers.0.mlp.weight": torch.randn(4, 4)}
    torch.save({"state_dict": {f"model.{k}": v for k, v in weights.items()}}, tmp_path / "lightning.ckpt")
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save(weights, plain / "pytorch_model.bin")
    code, data = run_json("diff-keys", str(tmp_path / "lightning.ckpt"), str(plain))
    assert code == 1 and data["matched"] == 0
    assert {(u["reason"], u["severity"]) for u in data["unexpected"]} == {("base-model-prefix", "error")}
    (plain / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaModel"]}))
    code, data = run_json("diff-keys", str(tmp_path / "lightning.ckpt"), str(plain))
    assert code == 0 and {(u["reason"], u["severity"]) for u in data["unexpected"]} == {("base-model-prefix", "warn")}


def test_a_missing_untied_lm_head_is_a_warning(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    b = {"model.embed_tokens.weight": torch.randn(16, 4), "lm_head.weight": torch.randn(16, 4),
         "score.weight": torch.randn(2, 4)}
    save_file(b, str(tmp_path / "b.safetensors"))
    save_file({"model.embed_tokens.weight": b["model.embed_tokens.weight"]}, str(tmp_path / "a.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "tie_word_embeddings": False}))
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                          "--fail-on", "warn")
    assert code == 1
    assert {m["name"]: (m["reason"], m["severity"]) for m in data["missing"]} == {
        "lm_head.weight": ("task-head", "warn"), "score.weight": ("task-head", "info")}


def test_what_is_not_a_state_dict_is_named_plainly(tmp_path: Path) -> None:
    import numpy as np

    torch.save(torch.get_rng_state(), tmp_path / "rng_state.pth")
    result = run_cli("inspect", str(tmp_path / "rng_state.pth"))
    assert result.exit_code == 2 and "the file holds a single tensor [5056] uint8" in result.stderr
    assert "StaticTensor" not in result.stderr
    torch.save({"w": torch.ones(2), "arr": np.ones(4), 0: torch.ones(3)}, tmp_path / "odd.bin")
    code, data = run_json("inspect", str(tmp_path / "odd.bin"))
    assert code == 0 and data["num_tensors"] == 1
    assert data["skipped_entries"] == [
        "arr (numpy array [4] float64)",
        "0 (tensor [3] float32, under a key that is not a string: load_state_dict cannot)"]
    torch.save({"encoder": {"a.w": torch.ones(2)}, "decoder": {"b.w": torch.ones(2)}}, tmp_path / "gan.bin")
    code, data = run_json("inspect", str(tmp_path / "gan.bin"))
    assert data["nested_key"] == "encoder"
    assert data["other_entries"] == ["decoder (a state dict of 1 tensor: pick it with --key)"]


def test_the_training_state_of_a_trainer_checkpoint_is_named_not_read_as_weights(tmp_path: Path) -> None:
    """A Trainer's checkpoint-N/ holds optimizer.pt, scheduler.pt, rng_state.pth and training_args.bin beside
    model.safetensors: pointed at one of them, the message says what it is and where the weights are (it was
    "pick one with --key" for entries no --key reads, and the RNG state read as a model of one tensor `cpu`)."""
    import random

    import numpy as np
    from safetensors.torch import save_file

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    save_file(model.state_dict(), str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    torch.save(optimizer.state_dict(), checkpoint / "optimizer.pt")
    torch.save(scheduler.state_dict(), checkpoint / "scheduler.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()},
               checkpoint / "rng_state.pth")
    # Accelerate's save_state keeps its RNG states as random_states_0.pkl, written by torch.save.
    torch.save({"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, checkpoint / "random_states_0.pkl")
    # What torch.save(TrainingArguments(...)) starts with; the scan stops there, so no Trainer is needed.
    (checkpoint / "training_args.bin").write_bytes(
        b"\x80\x02ctransformers.training_args\nTrainingArguments\nq\x00)\x81q\x01}q\x02b.")
    expected = {
        "optimizer.pt": "holds an optimizer's state dict (torch.optim: `state` and `param_groups`",
        "scheduler.pt": "holds a learning-rate scheduler's state dict",
        "rng_state.pth": "holds random-number generator states (python, numpy, cpu: a Trainer's rng_state.pth)",
        "random_states_0.pkl": "holds random-number generator states (Accelerate's random_states_N.pkl)",
        "training_args.bin": "holds a Trainer's TrainingArguments (training_args.bin: the run's settings, read as "
                             "inert data",
    }
    for name, words in expected.items():
        result = run_cli("inspect", str(checkpoint / name))
        assert result.exit_code == 2 and result.stdout == "", (name, result.stdout)
        assert words in result.stderr, (name, result.stderr)
        # The weights beside it, by name (it said "model.safetensors or pytorch_model.bin" of every folder).
        assert f"The weights beside it: model.safetensors: point weightdoctor at {checkpoint / 'model.safetensors'}" \
            in result.stderr and "--key" not in result.stderr
    # A checkpoint-N holding training state only (DeepSpeed ZeRO-3 keeps the model in shards for zero_to_fp32.py).
    state_only = tmp_path / "checkpoint-4"
    state_only.mkdir()
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (state_only / name).write_bytes((checkpoint / name).read_bytes())
    (state_only / "zero_to_fp32.py").write_text("")
    result = run_cli("inspect", str(state_only))
    assert result.exit_code == 2 and "folder holds no weight file (.safetensors, .bin, .pt, .pth, .ckpt); it holds " \
        "training state only (optimizer.pt, rng_state.pth, scheduler.pt: optimizer, scheduler, RNG; not the model's " \
        "weights); DeepSpeed's zero_to_fp32.py beside it gathers the weights" in " ".join(result.stderr.split())
    # Lightning keeps the optimizer's state dict in a list: --key to it says what it names.
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "optimizer_states": [optimizer.state_dict()]}, tmp_path / "lightning.ckpt")
    result = run_cli("inspect", str(tmp_path / "lightning.ckpt"), "--key", "optimizer_states.0")
    assert result.exit_code == 2 and "--key 'optimizer_states.0' names an optimizer's state dict (torch.optim: " \
        "`state` and `param_groups`, e.g. a Trainer's optimizer.pt), not model weights" in result.stderr
    # The folder reads model.safetensors; convert names the training state as such, not as other weights.
    code, data = run_json("convert", str(checkpoint), "-o", str(tmp_path / "out"), "--dry-run")
    assert code == 0 and data["plan"]["num_tensors"] == 2
    assert data["plan"]["warnings"] == [
        "not copied: optimizer.pt (training state, not part of the model), random_states_0.pkl (training state, "
        "not part of the model), rng_state.pth (training state, not part of the model), scheduler.pt (training "
        "state, not part of the model), training_args.bin (training state, not part of the model)"]


def test_values_with_infinities_and_nans(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    inf, nan = float("inf"), float("nan")
    a = {"same_inf.weight": torch.tensor([inf, 1.0]), "turned_nan.weight": torch.tensor([nan, 1.0]),
         "changed.weight": torch.tensor([1.5, 1.0]), "both_nan.weight": torch.tensor([nan, 2.0])}
    b = {"same_inf.weight": torch.tensor([inf, 1.0]), "turned_nan.weight": torch.tensor([0.5, 1.0]),
         "changed.weight": torch.tensor([1.0, 1.0]), "both_nan.weight": torch.tensor([nan, 2.0])}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--values")
    rows = {v["name"]: v for v in data["values"]}
    assert rows["same_inf.weight"]["identical"] and rows["same_inf.weight"]["max_abs_diff"] == 0.0
    assert rows["both_nan.weight"]["identical"] and rows["both_nan.weight"]["max_abs_diff"] == 0.0
    assert not rows["turned_nan.weight"]["identical"] and rows["turned_nan.weight"]["max_abs_diff"] == "nan"
    assert rows["changed.weight"]["max_abs_diff"] == 0.5
    assert [layer["layer"] for layer in data["layers_changed_most"]][:2] == ["turned_nan", "changed"]


def _snapshot(tmp_path: Path) -> Path:
    """A Hub-cache-like snapshot: every file a link into ../../blobs."""
    from safetensors.torch import save_file

    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    save_file({"w.weight": torch.ones(2, 2)}, str(blobs / "st"))
    torch.save({"w.weight": torch.ones(2, 2)}, blobs / "bin")
    (blobs / "cfg").write_text(json.dumps({"model_type": "bert"}))
    (blobs / "tok").write_text("{}")
    for name, blob in (("model.safetensors", "st"), ("pytorch_model.bin", "bin"), ("config.json", "cfg"),
                       ("tokenizer.json", "tok")):
        (snapshot / name).symlink_to(Path("../../blobs") / blob)
    return snapshot


def test_a_link_to_a_missing_blob_is_named(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path)
    (tmp_path / "blobs" / "st").rename(tmp_path / "blobs" / "st.incomplete")
    result = run_cli("inspect", str(snapshot))  # not silently the .bin beside it
    assert result.exit_code == 2 and "model.safetensors" in result.stderr
    assert "does not exist (its download did not finish)" in result.stderr


def test_convert_names_side_files_whose_blob_is_missing(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path)
    (tmp_path / "blobs" / "tok").unlink()
    code, data = run_json("convert", str(snapshot), "-o", str(tmp_path / "out"))
    assert code == 0 and not (tmp_path / "out" / "tokenizer.json").exists()
    assert any("tokenizer.json (a link to a missing file" in w for w in data["plan"]["warnings"]), data["plan"]


def test_diff_keys_compares_two_revisions_of_one_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    from fixtures.build import write_hub_cache

    cache = tmp_path / "cache"
    for revision, names in (("v1", ["a.weight", "b.weight"]), ("v2", ["a.weight", "b.weight", "head.weight"])):
        files = tmp_path / revision
        files.mkdir()
        save_file({name: torch.ones(2) for name in names}, str(files / "model.safetensors"))
        write_hub_cache(cache, "org/model", files, revision=revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    code, data = run_json("diff-keys", "org/model", "org/model", "--revision", "v1", "--revision-b", "v2")
    assert code == 0 and data["matched"] == 2 and [m["name"] for m in data["missing"]] == ["head.weight"]
    # The report says which revision each side is, and which snapshot was read.
    assert (data["revision_a"], data["revision_b"]) == ("v1", "v2")
    assert data["resolved_a"] != data["resolved_b"]
    assert all("models--org--model/snapshots/" in data[k] for k in ("resolved_a", "resolved_b"))
    text = run_cli("diff-keys", "org/model", "org/model", "--revision", "v1", "--revision-b", "v2").stdout
    assert "org/model (revision v1)" in text and "org/model (revision v2)" in text
    code, data = run_json("diff-keys", "org/model", "org/model", "--revision", "v2")  # both at v2
    assert data["missing"] == [] and data["matched"] == 3
    result = run_cli("diff-keys", "org/model", "--model-class", "BertModel", "--revision-b", "v2")
    assert result.exit_code == 2 and "--revision-b" in result.stderr


def test_an_uncached_revision_names_what_the_cache_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    from fixtures.build import write_hub_cache

    files = tmp_path / "files"
    files.mkdir()
    save_file({"w": torch.ones(2)}, str(files / "model.safetensors"))
    snapshot = write_hub_cache(tmp_path / "cache", "org/model", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    result = run_cli("inspect", "org/model", "--revision", "v9")
    assert result.exit_code == 2 and f"the cache holds main -> {snapshot.name[:10]}" in result.stderr
    # A short sha, as git and the Hub's pages show commits, picks the one snapshot it starts.
    code, data = run_json("inspect", "org/model", "--revision", snapshot.name[:7])
    assert code == 0 and data["resolved_path"].endswith(snapshot.name), data
    (tmp_path / "cache" / "models--org--model" / "refs" / "main").write_text("0" * 40)
    result = run_cli("inspect", "org/model")
    assert result.exit_code == 2 and f"main -> 0000000000 (snapshot missing), {snapshot.name[:10]}" in result.stderr


def test_a_planner_failure_is_one_line(tmp_path: Path) -> None:
    """transformers' own planner raises IndexError for these budgets (a tiny float16 ALBERT at int8 on 20 KB: its
    unquantized rest at float16, as from_pretrained(dtype="auto") builds it; a float32 config's rest is planned at
    float32 and fits these budgets)."""
    from transformers import AlbertConfig

    config = AlbertConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=64, embedding_size=16,
                          architectures=["AlbertForMaskedLM"], dtype="float16")
    config.save_pretrained(tmp_path)
    result = run_cli("plan-devices", str(tmp_path), "--gpu", "20KB", "--cpu", "30KB", "--dtype", "int8")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "_get_device_map fails on these budgets (IndexError" in result.stderr


def test_an_unexpected_error_names_the_source_that_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure nobody foresaw while reading B names B, not the first source given."""
    from safetensors.torch import save_file

    from weightdoctor.checkpoint import safetensors_format

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"w": torch.ones(2)}, str(a))
    save_file({"w": torch.ones(2)}, str(b))
    real = safetensors_format.read_header

    def failing_on_b(path: Path, relpath: str) -> safetensors_format.SafetensorsHeader:
        if Path(path).name == "b.safetensors":
            raise ValueError("planted failure")
        return real(path, relpath)

    monkeypatch.setattr(safetensors_format, "read_header", failing_on_b)
    result = run_cli("diff-keys", str(a), str(b))
    assert result.exit_code == 2
    assert f"{b}: unexpected ValueError: planted failure" in result.stderr, result.stderr


@pytest.mark.parametrize("ref", ["", "../../../outside"])
def test_a_ref_that_names_no_snapshot_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str) -> None:
    """An empty refs/main read the snapshots folder itself; `../..` in it led out of the cache."""
    from safetensors.torch import save_file

    from fixtures.build import write_hub_cache

    cache = tmp_path / "cache"
    files = tmp_path / "files"
    files.mkdir()
    save_file({"w": torch.ones(2)}, str(files / "model.safetensors"))
    write_hub_cache(cache, "org/model", files)
    outside = tmp_path / "outside"
    outside.mkdir()
    save_file({"elsewhere": torch.ones(2)}, str(outside / "model.safetensors"))
    (cache / "models--org--model" / "refs" / "main").write_text(ref)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "org/model")
    assert result.exit_code == 2, result.stdout
    assert "refs/main of org/model does not name a snapshot" in result.stderr


def test_meta_model_parallel_parts_are_named_for_what_they_are(tmp_path: Path) -> None:
    """Meta's 13B/70B originals hold one consolidated.NN.pth per model-parallel rank, each a slice of every
    tensor: not shards. The folder is refused with that said; one part opens alone; other several-file folders
    keep the plain message."""
    meta = tmp_path / "llama-2-13b"
    meta.mkdir()
    for rank in range(2):
        torch.save({"layers.0.attention.wq.weight": torch.zeros(8, 16)}, meta / f"consolidated.0{rank}.pth")
    (meta / "params.json").write_text(json.dumps({"dim": 16, "n_layers": 1, "n_heads": 2}))
    result = run_cli("inspect", str(meta))
    assert result.exit_code == 2
    assert "2 model-parallel parts of Meta's original checkpoint (consolidated.00.pth, consolidated.01.pth)" \
        in result.stderr and "convert_llama_weights_to_hf.py" in result.stderr and "Traceback" not in result.stderr
    code, data = run_json("inspect", str(meta / "consolidated.01.pth"))
    assert code == 0 and data["num_tensors"] == 1
    other = tmp_path / "two"
    other.mkdir()
    for name in ("a.pt", "b.pt"):
        torch.save({"w": torch.zeros(2)}, other / name)
    result = run_cli("inspect", str(other))
    assert result.exit_code == 2 and "several weight files and no index (a.pt, b.pt); name one" in result.stderr


# Written in a child interpreter: the omegaconf and Lightning classes exist there only (neither is installed),
# so the reader below cannot have imported them.
_TRAINING_CHECKPOINTS = r'''
import argparse, pathlib, sys, types, torch

def fake(module_name, class_name, base=object):
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls = type(class_name, (base,), {"__module__": module_name})
    setattr(sys.modules[module_name], class_name, cls)
    return cls

DictConfig = fake("omegaconf.dictconfig", "DictConfig")
AttributeDict = fake("lightning_fabric.utilities.data", "AttributeDict", dict)
config = DictConfig()
config.__dict__.update({"_content": {"lr": 0.1, "layers": 2}, "_parent": None})
hparams = AttributeDict(lr=0.1, hidden=32)
out = sys.argv[1]
torch.save({"args": argparse.Namespace(arch="transformer", lr=[0.25]), "cfg": config,
            "model": {"encoder.w": torch.ones(3), "decoder.w": torch.zeros(2, 2)}}, out + "/fairseq.pt")
torch.save({"state_dict": {"model.w": torch.ones(4)}, "hyper_parameters": hparams, "epoch": 3,
            "log_dir": pathlib.PurePosixPath("/runs/1")}, out + "/lightning.ckpt")
# Protocol 4 sends torch's own loader to the restricted fallback, which must build the same stand-ins.
torch.save({"args": argparse.Namespace(arch="transformer"), "cfg": config, "hp": hparams,
            "model": {"encoder.w": torch.ones(3)}}, out + "/protocol4.pt", pickle_protocol=4)
import pickle, numpy
for protocol in (2, 4, 5):
    with open(out + f"/plain{protocol}.pkl", "wb") as handle:  # pickle.dump: a state dict inside an AttributeDict
        pickle.dump(AttributeDict(args=argparse.Namespace(lr=1), model=AttributeDict(w=numpy.ones((2, 3), "float32"))),
                    handle, protocol=protocol)
'''


def test_training_checkpoints_with_config_objects_read_them_as_inert_data(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """fairseq's argparse.Namespace, omegaconf's DictConfig, Lightning's AttributeDict: torch's weights_only
    loader refuses them; the reader builds inert stand-ins (never importing the classes) and reads the weights."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", _TRAINING_CHECKPOINTS, str(tmp_path)], check=True)
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(tmp_path / "fairseq.pt", weights_only=True)  # the reference refuses
    # Another test of the same run may have imported them to build its files: set aside for this test (restored
    # after it), so that only what inspect imports counts.
    for name in [n for n in sys.modules if n.split(".")[0] in ("omegaconf", "lightning_fabric")]:
        monkeypatch.delitem(sys.modules, name)
    assert "omegaconf" not in sys.modules and "lightning_fabric" not in sys.modules
    code, data = run_json("inspect", str(tmp_path / "fairseq.pt"))
    assert code == 0, data
    assert data["nested_key"] == "model" and data["num_tensors"] == 2 and data["security"]["verdict"] == "safe"
    safety = {g["module"] + "." + g["name"]: g["safety"] for g in data["security"]["globals"]}
    assert safety["argparse.Namespace"] == safety["omegaconf.dictconfig.DictConfig"] == "inert"
    assert "args (argparse.Namespace, read as inert data)" in ", ".join(data["other_entries"])
    assert "omegaconf" not in sys.modules  # never imported: the stand-in was built instead
    text = run_cli("inspect", str(tmp_path / "fairseq.pt")).stdout
    assert "read as inert data" in text and "never" in text
    code, data = run_json("inspect", str(tmp_path / "lightning.ckpt"))
    assert code == 0 and data["nested_key"] == "state_dict" and data["num_tensors"] == 1
    assert "lightning_fabric" not in sys.modules
    # The weights convert like any others.
    code, data = run_json("convert", str(tmp_path / "fairseq.pt"), "-o", str(tmp_path / "fairseq.safetensors"))
    assert code == 0, data
    code, data = run_json("inspect", str(tmp_path / "protocol4.pt"))
    assert code == 0 and data["nested_key"] == "model" and data["num_tensors"] == 1, data
    for protocol in (2, 4, 5):
        code, data = run_json("inspect", str(tmp_path / f"plain{protocol}.pkl"))
        assert code == 0 and data["nested_key"] == "model", (protocol, data)
        assert [(t["name"], t["shape"]) for t in data["tensors"]] == [("w", [2, 3])]
    assert "omegaconf" not in sys.modules and "lightning_fabric" not in sys.modules


# Written in a child interpreter with the real omegaconf (a test dependency): its containers pickle their node
# metadata too (typing.Any, builtins.dict and int, a defaultdict), as every Hydra / NeMo checkpoint does.
_OMEGACONF_CHECKPOINTS = r'''
import pickle, sys, numpy, torch
from omegaconf import OmegaConf

cfg = OmegaConf.create({"model": {"lr": 0.1, "layers": [1, 2], "name": "x", "flag": True, "none": None},
                        "trainer": {"devices": 1}})
weights = {"encoder.weight": torch.ones(3, 2), "encoder.bias": torch.zeros(3)}
out = sys.argv[1]
torch.save({"state_dict": weights, "hyper_parameters": {"cfg": cfg}, "epoch": 2}, out + "/nemo.ckpt")
torch.save({"state_dict": weights, "cfg": cfg}, out + "/protocol4.ckpt", pickle_protocol=4)
with open(out + "/plain.pkl", "wb") as handle:
    pickle.dump({"cfg": cfg, "model": {"w": numpy.ones((2, 2), "float32")}}, handle)
'''


def test_real_omegaconf_configs_are_read_as_inert_data(tmp_path: Path) -> None:
    """omegaconf's node metadata names typing.Any, builtins.dict, a defaultdict: unknown alone (suspicious),
    read as inert stand-ins beside omegaconf's containers, so real Hydra / NeMo checkpoints load."""
    import subprocess
    import sys

    had_omegaconf = "omegaconf" in sys.modules
    subprocess.run([sys.executable, "-c", _OMEGACONF_CHECKPOINTS, str(tmp_path)], check=True)
    for name in ("nemo.ckpt", "protocol4.ckpt"):
        code, data = run_json("inspect", str(tmp_path / name))
        assert code == 0, (name, data)
        assert data["nested_key"] == "state_dict" and data["num_tensors"] == 2 and data["security"]["verdict"] == "safe"
        safety = {g["module"] + "." + g["name"]: g["safety"] for g in data["security"]["globals"]}
        assert safety["typing.Any"] == safety["collections.defaultdict"] == "inert", safety
    code, data = run_json("inspect", str(tmp_path / "plain.pkl"))
    assert code == 0 and data["nested_key"] == "model" and data["num_tensors"] == 1, data
    assert had_omegaconf or "omegaconf" not in sys.modules  # stand-ins: the real classes were never imported
    # Alone, without omegaconf's containers, the same names stay unknown: nothing to stand in for.
    assert classify("typing", "Any") == classify("builtins", "dict") == "unknown"
    lone = tmp_path / "lone.pt"
    torch.save({"w": torch.zeros(2), "kind": dict}, lone)
    result = run_cli("inspect", str(lone))
    assert result.exit_code == 2 and "__builtin__.dict (unknown" in " ".join(result.stderr.split())


def test_inert_names_do_not_cover_other_globals() -> None:
    assert classify("argparse", "Namespace") == "inert"
    assert classify("argparse", "ArgumentParser") == "unknown"
    assert classify("omegaconf", "OmegaConf") == "unknown"  # a class with methods that run code on load
    assert classify("pathlib", "Path.write_text") == "dangerous"
    assert classify("os", "system") == "dangerous"


def test_export_and_nemo_archives_say_what_they_are(tmp_path: Path) -> None:
    """torch.export's .pt2 (a zip without data.pkl) and NeMo's .nemo (a tar around model_weights.ckpt)."""
    import io
    import tarfile

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    torch.export.save(torch.export.export(Tiny(), (torch.randn(1, 2),)), tmp_path / "tiny.pt2")
    result = run_cli("inspect", str(tmp_path / "tiny.pt2"))
    assert result.exit_code == 2 and "a torch.export archive (torch.export.save, .pt2)" in result.stderr
    assert "Traceback" not in result.stderr
    torch.save({"w": torch.zeros(2)}, tmp_path / "model_weights.ckpt")
    with tarfile.open(tmp_path / "model.nemo", "w") as archive:
        config = b"model: {}\n"
        info = tarfile.TarInfo("./model_config.yaml")
        info.size = len(config)
        archive.addfile(info, io.BytesIO(config))
        archive.add(tmp_path / "model_weights.ckpt", arcname="./model_weights.ckpt")
    result = run_cli("inspect", str(tmp_path / "model.nemo"))
    assert result.exit_code == 2
    assert "a NeMo archive (.nemo), a tar holding model_weights.ckpt: extract it" in " ".join(result.stderr.split())


def test_a_deepspeed_step_folder_reads_the_model_states(tmp_path: Path) -> None:
    """global_stepN/ holds mp_rank_00_model_states.pt and ZeRO-1/2 optimizer partitions: the model states are read,
    with a warning that the partitions hold the optimizer state and fp32 master weights (not ZeRO-3's wording:
    its placeholders are refused before); the run folder names its step folders."""
    step = tmp_path / "run" / "global_step10"
    step.mkdir(parents=True)
    torch.save({"module": {"w": torch.ones(2, 2)}, "global_steps": 10}, step / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {"state": {}}}, step / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (tmp_path / "run" / "latest").write_text("global_step10")
    code, data = run_json("inspect", str(step))
    assert code == 0 and data["nested_key"] == "module" and data["num_tensors"] == 1
    [warning] = [w for w in data["warnings"] if "zero_to_fp32.py" in w]
    assert "fp32 master weights" in warning and "ZeRO-3" not in warning
    result = run_cli("inspect", str(tmp_path / "run"))
    assert result.exit_code == 2 and "weights are in subfolders (global_step10/)" in result.stderr


def test_a_zero3_step_of_a_small_model_is_refused_though_most_tensors_are_real(tmp_path: Path) -> None:
    """ZeRO-3 leaves parameters under `stage3_param_persistence_threshold` (biases, norms) whole and saves the others
    as empty placeholders: with more small tensors than large ones, the folder was read as weights (exit 0, the
    empty ones included) under the ZeRO-1/2 wording. An empty `weight` marks the placeholders. bf16 runs name their
    partitions `bf16_zero_pp_rank_*`."""
    step = tmp_path / "global_step5"
    step.mkdir()
    module = {f"layer.{i}.dense.weight": torch.empty(0, dtype=torch.bfloat16) for i in range(12)}
    module.update({f"layer.{i}.dense.bias": torch.zeros(8, dtype=torch.bfloat16) for i in range(12)})
    module.update({f"layer.{i}.norm.weight": torch.ones(8, dtype=torch.bfloat16) for i in range(8)})
    torch.save({"module": module}, step / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, step / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    result = run_cli("inspect", str(step))
    assert result.exit_code == 2 and "ZeRO-3 model states file: placeholders, not weights (12 of 32" in \
        " ".join(result.stderr.split())
    # a ZeRO-1/2 step of bf16 training: the partitions are named, the weights read
    torch.save({"module": {"w.weight": torch.ones(4, 4, dtype=torch.bfloat16)}}, step / "mp_rank_00_model_states.pt")
    code, data = run_json("inspect", str(step))
    assert code == 0 and any("fp32 master weights" in w for w in data["warnings"]), data["warnings"]


def test_folders_whose_weights_the_file_read_does_not_show_say_so(fx: dict[str, Path], tmp_path: Path) -> None:
    """Only a dtype variant (`model.fp16.safetensors`: from_pretrained needs variant="fp16"), and a
    sentence-transformers model whose `2_Dense/` module holds weights of its own."""
    import shutil

    from safetensors.torch import save_file

    only_variant = tmp_path / "variant-only"
    only_variant.mkdir()
    shutil.copy(fx["bert"] / "config.json", only_variant)
    shutil.copy(fx["bert"] / "model.safetensors", only_variant / "model.fp16.safetensors")
    code, data = run_json("inspect", str(only_variant))
    assert code == 0 and any("variant='fp16'" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("inspect", str(fx["bert"]))
    assert not any("variant" in w for w in data["warnings"])
    both = tmp_path / "bin-and-variant"
    both.mkdir()
    shutil.copy(fx["files"] / "bert.bin", both / "pytorch_model.bin")
    shutil.copy(fx["bert"] / "model.safetensors", both / "model.fp16.safetensors")
    code, data = run_json("inspect", str(both))
    assert data["files"][0]["path"] == "pytorch_model.bin"
    assert any("model.fp16.safetensors ignored: dtype variants" in w for w in data["warnings"]), data["warnings"]
    st = tmp_path / "st"
    shutil.copytree(fx["bert"], st)
    (st / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x"}]))
    (st / "2_Dense").mkdir()
    save_file({"linear.weight": torch.zeros(4, 4)}, str(st / "2_Dense" / "model.safetensors"))
    code, data = run_json("inspect", str(st))
    assert any("module folder 2_Dense/ holds weights of its own" in w for w in data["warnings"]), data["warnings"]


def test_links_and_special_files_in_a_model_folder_say_what_they_are(fx: dict[str, Path], tmp_path: Path) -> None:
    """A FIFO named model.safetensors, a link loop given as the source, and (outside a Hub snapshot) a broken
    model.safetensors link beside a pytorch_model.bin, which from_pretrained reads past, as this does."""
    import os
    import shutil

    fifo_folder = tmp_path / "fifo"
    fifo_folder.mkdir()
    os.mkfifo(fifo_folder / "model.safetensors")
    result = run_cli("inspect", str(fifo_folder))
    assert result.exit_code == 2 and "model.safetensors is not a regular file (a FIFO)" in result.stderr
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    result = run_cli("inspect", str(tmp_path / "loop"))
    assert result.exit_code == 2 and "does not resolve" in result.stderr and "cache" not in result.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(fx["files"] / "bert.bin", broken / "pytorch_model.bin")
    (broken / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")
    code, data = run_json("inspect", str(broken))
    assert code == 0 and data["files"][0]["path"] == "pytorch_model.bin", data
    assert any("model.safetensors is a link to" in w and "pytorch_model.bin is read instead" in w
               for w in data["warnings"])


def test_a_sharded_dtype_variant_is_read_through_its_index(tmp_path: Path) -> None:
    """save_pretrained(variant="fp16", max_shard_size=...) names its index `model.safetensors.index.fp16.json`
    (the variant before `.json`) and its shards `model.fp16-00001-of-0000N.safetensors`: the folder was refused
    as "several weight files and no index"."""
    from fixtures.build import build_bert

    folder = tmp_path / "variant-sharded"
    build_bert().half().save_pretrained(folder, variant="fp16", max_shard_size="20KB")
    assert (folder / "model.safetensors.index.fp16.json").is_file()
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    assert data["sharded"] and data["files"][0]["path"] == "model.safetensors.index.fp16.json"
    assert data["num_tensors"] == len(build_bert().state_dict())
    assert any("variant='fp16'" in w for w in data["warnings"]), data["warnings"]
    # Beside a plain pytorch_model.bin (read first, as from_pretrained does), the sharded variant is named.
    torch.save(build_bert().state_dict(), folder / "pytorch_model.bin")
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["files"][0]["path"] == "pytorch_model.bin"
    assert any("model.safetensors.index.fp16.json" in w and "variant=" in w for w in data["warnings"]), data["warnings"]


@pytest.mark.parametrize(("dtype", "index"), [
    (None, "model.safetensors.index.fp16.json"), ("bf16", "model.safetensors.index.bf16.json"),
    ("fp32", "model.safetensors.index.json")])
def test_converting_a_sharded_variant_names_its_index_as_from_pretrained_looks_for_it(
        tmp_path: Path, dtype: str | None, index: str) -> None:
    """The index came out as `model.safetensors.index.fp16.safetensors.index.json`, which no loader finds."""
    from fixtures.build import build_bert

    folder = tmp_path / "variant-sharded"
    model = build_bert().half()
    model.save_pretrained(folder, variant="fp16", max_shard_size="20KB")
    out = tmp_path / "out"
    code, data = run_json("convert", str(folder / "model.safetensors.index.fp16.json"), "-o", str(out),
                          *(["--dtype", dtype] if dtype else []))
    assert code == 0, data
    assert data["plan"]["index"] == index and (out / index).is_file(), sorted(p.name for p in out.iterdir())
    from transformers import BertForSequenceClassification

    variant = index.split(".")[-2] if index.count(".") == 4 else None
    loaded = BertForSequenceClassification.from_pretrained(out, variant=variant)
    stored = {None: torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    expected = model.state_dict()
    for name, value in loaded.state_dict().items():
        assert torch.equal(value.float(), expected[name].to(stored).float()), name


def test_weights_split_over_nested_dicts_are_not_dropped_silently(tmp_path: Path) -> None:
    """Megatron-LM's model_optim_rng.pt keeps model.language_model.{embedding, encoder, output_layer} apart: the
    encoder was read alone and the other two, beside it one level down, were named nowhere."""
    hidden = 8
    path = tmp_path / "model_optim_rng.pt"
    torch.save({"iteration": 10, "checkpoint_version": 3.0, "model": {"language_model": {
        "embedding": {"word_embeddings": {"weight": torch.zeros(50, hidden)}},
        "encoder": {"layers.0.input_layernorm.weight": torch.ones(hidden),
                    "final_layernorm.weight": torch.ones(hidden)},
        "output_layer": {"weight": torch.zeros(50, hidden)}}}}, path)
    code, data = run_json("inspect", str(path))  # read whole since (tests/test_third_party_layouts4.py)
    assert code == 0 and data["nested_key"] == "model.language_model" and data["num_tensors"] == 4
    code, data = run_json("inspect", str(path), "--key", "model.language_model.encoder")
    assert code == 0 and data["nested_key"] == "model.language_model.encoder" and data["num_tensors"] == 2
    other = ", ".join(data["other_entries"])
    assert "iteration (int: 10)" in other
    assert "model.language_model.embedding (dict, 1 entry)" in other
    assert "model.language_model.output_layer (a state dict of 1 tensor: pick it with --key)" in other
    assert any("2 tensors beside the state dict are not read" in w and "model.language_model.embedding" in w
               for w in data["warnings"]), data["warnings"]


@pytest.mark.parametrize(("variant_file", "to", "expected"), [
    ("model.fp16.safetensors", "bin", "pytorch_model.fp16.bin"),
    ("pytorch_model.fp16.bin", "safetensors", "model.fp16.safetensors")])
def test_converting_a_variant_gives_the_name_from_pretrained_looks_for(
        tmp_path: Path, variant_file: str, to: str, expected: str) -> None:
    """from_pretrained(variant="fp16") reads model.fp16.safetensors or pytorch_model.fp16.bin: a converted
    variant came out as model.fp16.bin (or pytorch_model.fp16.safetensors), which it never finds."""
    from transformers import BertForSequenceClassification

    from fixtures.build import build_bert

    model = build_bert().half()
    folder = tmp_path / "variant"
    model.save_pretrained(folder, variant="fp16")
    if variant_file.endswith(".bin"):
        (folder / "model.fp16.safetensors").unlink()
        torch.save(model.state_dict(), folder / variant_file)
    out = tmp_path / "out"
    code, data = run_json("convert", str(folder), "-o", str(out), "--to", to)
    assert code == 0, data
    assert [f["filename"] for f in data["plan"]["files"]] == [expected]
    loaded = BertForSequenceClassification.from_pretrained(out, variant="fp16")
    for name, value in loaded.state_dict().items():
        assert torch.equal(value.half(), model.state_dict()[name]), name


def test_a_timm_config_is_summarised(tmp_path: Path) -> None:
    """timm's config.json names its model in `architecture` (no model_type, no architectures): the config panel
    was an empty box."""
    from safetensors.torch import save_file

    folder = tmp_path / "timm-resnet"
    folder.mkdir()
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 10,
                                                    "num_features": 8, "pretrained_cfg": {"tag": "a1_in1k"}}))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["config_summary"]["architectures"] == ["resnet18"]
    assert "architectures  resnet18" in " ".join(run_cli("inspect", str(folder)).stdout.split("│"))
    (folder / "config.json").write_text(json.dumps({"num_classes": 10}))
    assert "config.json" not in run_cli("inspect", str(folder)).stdout  # nothing to show: no empty panel


def test_a_distributed_checkpoint_folder_says_how_to_read_it(tmp_path: Path) -> None:
    """FSDP / torch.distributed.checkpoint saves `__0_0.distcp` shards and a `.metadata` file: PyTorch weights
    that were refused as "folder holds no weight file" without a word on what the folder holds."""
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "pytorch_model_fsdp_0"
    dcp.save({"model": {"w": torch.ones(2, 2)}}, checkpoint_id=str(folder))
    assert any(folder.glob("*.distcp")) and (folder / ".metadata").is_file()
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    line = " ".join(result.stderr.split())
    assert "a torch.distributed.checkpoint (DCP) folder" in line and "dcp_to_torch_save" in line, line


def test_weights_under_the_other_formats_name_are_read_and_said(fx: dict[str, Path], tmp_path: Path) -> None:
    """Safetensors bytes saved as pytorch_model.bin read as healthy, though from_pretrained torch.loads it and
    fails; a torch.save file named model.safetensors was refused as a safetensors header of 10^17 bytes."""
    import shutil

    from safetensors.torch import load_file

    as_bin = tmp_path / "safetensors-as-bin"
    as_bin.mkdir()
    shutil.copy(fx["bert"] / "config.json", as_bin)
    shutil.copy(fx["bert"] / "model.safetensors", as_bin / "pytorch_model.bin")
    with pytest.raises(Exception):  # noqa: B017 - the reference: torch.load cannot read it
        torch.load(as_bin / "pytorch_model.bin", weights_only=True)
    code, data = run_json("inspect", str(as_bin))
    assert code == 0 and data["format"] == "safetensors"
    assert any("safetensors bytes under a PyTorch pickle's name" in w for w in data["warnings"]), data["warnings"]
    as_safetensors = tmp_path / "pickle-as-safetensors"
    as_safetensors.mkdir()
    shutil.copy(fx["bert"] / "config.json", as_safetensors)
    torch.save(load_file(fx["bert"] / "model.safetensors"), as_safetensors / "model.safetensors")
    code, data = run_json("inspect", str(as_safetensors))
    assert code == 0 and data["format"] == "pytorch-zip" and data["security"]["verdict"] == "safe", data
    assert any("a PyTorch pickle (torch.save) under a safetensors name" in w for w in data["warnings"])
    code, data = run_json("convert", str(as_safetensors), "-o", str(tmp_path / "fixed.safetensors"))
    assert code == 0, data
    fixed, original = load_file(tmp_path / "fixed.safetensors"), load_file(fx["bert"] / "model.safetensors")
    assert fixed.keys() == original.keys() and all(torch.equal(fixed[k], original[k]) for k in original)


def test_a_diffusers_or_timm_config_is_not_called_missing_by_the_planner(tmp_path: Path) -> None:
    """A diffusers model folder has a config.json (diffusers', `_class_name`), timm's one too (`architecture`):
    the planner, building from the tensors since neither has a transformers model_type, said "no config.json"."""
    from safetensors.torch import save_file

    weights = {f"down_blocks.{i}.resnets.0.conv1.weight": torch.zeros(8, 8, 3, 3) for i in range(2)}
    for name, config, said in [
        ("unet", {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.27.0"},
         "config.json (a diffusers UNet2DConditionModel config, not a transformers one) does not say which "
         "modules must stay whole"),
        ("timm", {"architecture": "resnet18", "num_classes": 10},
         "config.json (a timm resnet18 config, not a transformers one) does not say which modules"),
        ("bare", None, "no config.json to say which modules must stay whole")]:
        folder = tmp_path / name
        folder.mkdir()
        save_file(weights, folder / "model.safetensors")
        if config is not None:
            (folder / "config.json").write_text(json.dumps(config))
        code, data = run_json("plan-devices", str(folder), "--gpu", "10GB")
        assert code == 0, data
        assert data["built_from"] == "tensors"
        assert any(w.startswith(said) and "each numbered block (down_blocks.0, " in w
                   for w in data["warnings"]), data["warnings"]


def test_model_class_on_a_diffusers_folder_names_whose_config_it_is(tmp_path: Path) -> None:
    """`diff-keys unet --model-class ...`: the diffusers config.json was called one with "no model_type", as if
    broken; it is diffusers', which transformers cannot build."""
    from safetensors.torch import save_file

    unet = tmp_path / "unet"
    unet.mkdir()
    save_file({"conv_in.weight": torch.zeros(8, 4, 3, 3)}, unet / "diffusion_pytorch_model.safetensors")
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    result = run_cli("diff-keys", str(unet), "--model-class", "UNet2DConditionModel")
    assert result.exit_code == 2
    assert "config.json is a diffusers UNet2DConditionModel config, with no transformers model_type" in \
        " ".join(result.stderr.split())


def test_an_ultralytics_yolo_checkpoint_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """yolov8n.pt as ultralytics saves it: {"model": DetectionModel pickled whole, "ema", "optimizer", "train_args",
    ...}. Refused unread (exit 2), and said to be Ultralytics' with the way to a state dict; no command unpickles
    it, though here its class is importable (a load would have run it)."""
    import sys
    import types

    class DetectionModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

    DetectionModel.__module__, DetectionModel.__qualname__ = "ultralytics.nn.tasks", "DetectionModel"
    tasks = types.ModuleType("ultralytics.nn.tasks")
    tasks.DetectionModel = DetectionModel  # type: ignore[attr-defined]
    for name, module in [("ultralytics", types.ModuleType("ultralytics")),
                         ("ultralytics.nn", types.ModuleType("ultralytics.nn")), ("ultralytics.nn.tasks", tasks)]:
        monkeypatch.setitem(sys.modules, name, module)
    path = tmp_path / "yolov8n.pt"
    torch.save({"date": "2024-01-01", "version": "8.1.0", "model": DetectionModel().half(), "ema": None,
                "optimizer": None, "train_args": {"epochs": 100, "imgsz": 640}, "epoch": -1}, path)
    for args in (["inspect", str(path)], ["convert", str(path), "-o", str(tmp_path / "out.safetensors")],
                 ["check-dtype", str(path)]):
        result = run_cli(*args)
        assert result.exit_code == 2 and result.stdout == ""
        text = " ".join(result.stderr.split())
        assert "ultralytics.nn.tasks.DetectionModel" in text and "nothing was unpickled (this is an Ultralytics " \
            "YOLO checkpoint" in text and f"YOLO({str(path)!r}).model.state_dict()" in text
    assert not (tmp_path / "out.safetensors").exists()


def test_an_openai_whisper_checkpoint_converts_and_names_the_dims_it_leaves_out(tmp_path: Path) -> None:
    """openai-whisper's own .pt: {"dims": {n_mels, n_audio_state, ...}, "model_state_dict": {...}} in fp16. The
    state dict is found and converted equal; the warning said "not optimizer or other entries" where what is left
    out is `dims`, which whisper.load_model needs to rebuild the model."""
    from safetensors.torch import load_file

    dims = {"n_mels": 80, "n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 8, "n_audio_head": 2,
            "n_audio_layer": 1, "n_text_ctx": 448, "n_text_state": 8, "n_text_head": 2, "n_text_layer": 1}
    weights = {"encoder.conv1.weight": torch.randn(8, 80, 3).half(), "encoder.blocks.0.attn.query.weight":
               torch.randn(8, 8).half(), "decoder.token_embedding.weight": torch.randn(16, 8).half()}
    source = tmp_path / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": weights}, source)
    code, data = run_json("inspect", str(source))
    assert code == 0 and data["nested_key"] == "model_state_dict" and data["num_tensors"] == 3
    for command, extra in [("convert", []), ("shard", ["--single"])]:
        out = tmp_path / f"{command}.safetensors" if command == "convert" else tmp_path / command
        code, data = run_json(command, str(source), "-o", str(out), *extra)
        assert code == 0, data
        assert "only the state dict at 'model_state_dict' is written, not the checkpoint's other entries (dims)" \
            in data["plan"]["warnings"]
        written = load_file(out if command == "convert" else out / "model.safetensors")
        assert written.keys() == weights.keys() and all(torch.equal(written[k], v) for k, v in weights.items())


def test_a_native_params_json_is_summarised_and_checked_against_the_weights(tmp_path: Path) -> None:
    """Mistral's `consolidated.safetensors` and Meta's `consolidated.00.pth` come with `params.json`, not
    config.json: inspect showed no word of it. Its fields are shown; a layer count or vocabulary the weights
    contradict is a warning; Llama 2's vocab_size -1 (the tokenizer decides) is not."""
    from safetensors.torch import save_file

    weights = {"tok_embeddings.weight": torch.zeros(100, 16), "norm.weight": torch.zeros(16),
               **{f"layers.{i}.attention.wq.weight": torch.zeros(16, 16) for i in range(2)}}
    folder = tmp_path / "mistral"
    folder.mkdir()
    save_file(weights, folder / "consolidated.safetensors")
    (folder / "params.json").write_text(json.dumps({"dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
                                                    "vocab_size": 100, "rope_theta": 1e6, "unknown": 1}))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["native_params"] == {"dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
                                                   "vocab_size": 100, "rope_theta": 1e6}
    assert data["warnings"] == []
    assert "params.json dim=16, n_layers=2, n_heads=2, n_kv_heads=1" in " ".join(
        run_cli("inspect", str(folder)).stdout.replace("│", " ").split())
    (folder / "params.json").write_text(json.dumps({"dim": 16, "n_layers": 3, "n_heads": 2, "vocab_size": 128}))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["warnings"] == [
        "params.json says n_layers=3, the weights hold 2 layers (layers.0 to layers.1)",
        "params.json says vocab_size=128, tok_embeddings.weight has 100 rows"]
    meta = tmp_path / "meta"
    meta.mkdir()
    torch.save(weights, meta / "consolidated.00.pth")
    (meta / "params.json").write_text(json.dumps({"dim": 16, "n_layers": 2, "n_heads": 2, "vocab_size": -1}))
    code, data = run_json("inspect", str(meta))
    assert code == 0 and data["native_params"]["vocab_size"] == -1 and data["warnings"] == []
    # Beside a config.json (transformers'), or another library's params.json: not read.
    (meta / "params.json").write_text(json.dumps({"lr": 0.1}))
    assert run_json("inspect", str(meta))[1]["native_params"] is None
    (folder / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    assert run_json("inspect", str(folder))[1]["native_params"] is None


def test_an_original_stable_diffusion_ckpt_with_lightning_callbacks_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CompVis' sd-v1-4.ckpt is a Lightning 1.x checkpoint: its "callbacks" dict is keyed by the ModelCheckpoint
    class itself (a GLOBAL, never built). It was refused as "suspicious: ...ModelCheckpoint", so the most shared
    .ckpt there is could not be inspected or converted; it is read as inert data, like Lightning's AttributeDict."""
    import sys
    import types

    from safetensors.torch import load_file

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = "pytorch_lightning.callbacks.model_checkpoint", \
        "ModelCheckpoint"
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["pytorch_lightning.callbacks.model_checkpoint"].ModelCheckpoint = ModelCheckpoint  # type: ignore
    weights = {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
               "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3)}
    source = tmp_path / "sd-v1-4.ckpt"
    torch.save({"epoch": 6, "global_step": 470000, "pytorch-lightning_version": "1.4.2", "state_dict": weights,
                "callbacks": {ModelCheckpoint: {"monitor": None, "best_model_path": "/fsx/last.ckpt"}},
                "optimizer_states": [], "lr_schedulers": []}, source)
    monkeypatch.delitem(sys.modules, "pytorch_lightning.callbacks.model_checkpoint")  # as where weightdoctor runs
    code, data = run_json("inspect", str(source))
    assert code == 0, data
    assert data["nested_key"] == "state_dict" and data["num_tensors"] == 2
    assert "callbacks (dict, 1 entry)" in data["other_entries"]
    code, data = run_json("convert", str(source), "-o", str(tmp_path / "out.safetensors"))
    assert code == 0, data
    written = load_file(tmp_path / "out.safetensors")
    assert written.keys() == weights.keys() and all(torch.equal(written[k], v) for k, v in weights.items())


def test_check_dtype_says_how_diffusers_and_timm_load_what_their_config_does_not_type(tmp_path: Path) -> None:
    """A diffusers or timm config.json has no dtype field by design: check-dtype said "dtype='auto' goes by the
    weights", transformers' rule, where diffusers' from_pretrained loads in float32 without torch_dtype (an fp16
    variant is up-cast) and timm builds in float32."""
    from safetensors.torch import save_file

    unet = tmp_path / "unet"
    unet.mkdir()
    save_file({"conv_in.weight": torch.randn(8, 4, 3, 3).half()}, unet / "diffusion_pytorch_model.fp16.safetensors")
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    code, data = run_json("check-dtype", str(unet / "diffusion_pytorch_model.fp16.safetensors"))
    assert code == 0, data
    agreement = data["config_agreement"]
    assert agreement["status"] == "not-set" and agreement["message"] == (
        "a diffusers UNet2DConditionModel config (no dtype field): diffusers' from_pretrained loads in float32 "
        "unless given torch_dtype: the float16 weights are up-cast at load (more memory); pass "
        "torch_dtype=torch.float16 to keep them")
    timm = tmp_path / "timm"
    timm.mkdir()
    torch.save({"fc.weight": torch.randn(10, 8)}, timm / "pytorch_model.bin")
    (timm / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 10}))
    code, data = run_json("check-dtype", str(timm))
    assert code == 0 and data["config_agreement"]["message"].startswith(
        "a timm resnet18 config (no dtype field): timm builds the model in float32")


def test_a_timm_num_classes_the_head_does_not_have_is_a_warning(tmp_path: Path) -> None:
    """timm's config.json says num_classes and names its classifier (`pretrained_cfg.classifier`); a model
    fine-tuned to 10 classes under the ImageNet config (1000) fails timm.create_model(pretrained=True). inspect
    showed the class count nowhere and said nothing."""
    folder = tmp_path / "timm-resnet"
    folder.mkdir()
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8), "fc.bias": torch.zeros(10)},
               folder / "pytorch_model.bin")
    config = {"architecture": "resnet18", "num_classes": 1000, "num_features": 8,
              "pretrained_cfg": {"tag": "a1_in1k", "num_classes": 1000, "classifier": "fc"}}
    (folder / "config.json").write_text(json.dumps(config))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["config_summary"]["num_classes"] == 1000
    assert data["warnings"] == [
        "config.json says num_classes=1000 (timm), fc.weight has 10 rows: import timm; timm.create_model('resnet18', "
        "pretrained=True) builds 1000 outputs, which these head weights do not fit; set num_classes=10"]
    (folder / "config.json").write_text(json.dumps({**config, "num_classes": 10}))
    assert run_json("inspect", str(folder))[1]["warnings"] == []
