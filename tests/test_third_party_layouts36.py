"""A thirty-sixth round: fairseq's training checkpoints (checkpoint_best.pt, checkpoint_last.pt) and the one-value
`_float_tensor` buffer every fairseq model with sinusoidal positions keeps.

fairseq is not installed here: the file is written as its checkpoint_utils.save_state / Trainer.state_dict write it
(`args` an argparse.Namespace in fairseq 0.9-0.10, `cfg` a plain dict from OmegaConf.to_container later, `model`,
`optimizer_history`, `extra_state`, `last_optimizer_state`), the model's names as fairseq/models/transformer writes
them (`encoder.version`, `decoder.output_projection.weight` tied to `decoder.embed_tokens.weight`). Read with the
search tool: SinusoidalPositionalEmbedding registers `self._float_tensor = torch.FloatTensor(1)` (uninitialized
memory, used only by `.type_as`), and each model's upgrade_state_dict_named writes
`state_dict[f"{name}.embed_positions._float_tensor"] = torch.FloatTensor(1)` again on load. What that memory held is
whatever the allocator had: the tests pin values such memory does hold (1e30, a subnormal, NaN) rather than rely on
torch.FloatTensor(1)'s garbage.

Found: check-dtype called fp16 `unsafe` for a whole fairseq model and `convert --dtype float16` refused it, for that
one value; `inspect --stats` raised `nan-inf` (error) or `fp16-overflow` on it; `diff-keys --values` of two saves of the
same weights ranked it the layer changed most (by 1e48). Each now leaves it out, and says so.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import safe_open

from tests.helpers import run_cli, run_json

_PLACEHOLDERS = ("encoder.embed_positions._float_tensor", "decoder.embed_positions._float_tensor")


def _fairseq_model(seed: int = 0, dim: int = 16, vocab: int = 40) -> OrderedDict[str, torch.Tensor]:
    """A one-layer fairseq `transformer` state dict (share_decoder_input_output_embed), in fairseq's own order."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.05

    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for side in ("encoder", "decoder"):
        state[f"{side}.version"] = torch.Tensor([3])
        state[f"{side}.embed_tokens.weight"] = normal(vocab, dim)
        state[f"{side}.embed_positions._float_tensor"] = torch.zeros(1)  # overwritten by each test's memory
        attentions = ("self_attn", "encoder_attn") if side == "decoder" else ("self_attn",)
        for attention in attentions:
            for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
                state[f"{side}.layers.0.{attention}.{projection}.weight"] = normal(dim, dim)
                state[f"{side}.layers.0.{attention}.{projection}.bias"] = normal(dim)
            state[f"{side}.layers.0.{attention}_layer_norm.weight"] = 1 + normal(dim)
            state[f"{side}.layers.0.{attention}_layer_norm.bias"] = normal(dim)
        state[f"{side}.layers.0.fc1.weight"] = normal(4 * dim, dim)
        state[f"{side}.layers.0.fc1.bias"] = normal(4 * dim)
        state[f"{side}.layers.0.fc2.weight"] = normal(dim, 4 * dim)
        state[f"{side}.layers.0.fc2.bias"] = normal(dim)
        state[f"{side}.layers.0.final_layer_norm.weight"] = 1 + normal(dim)
        state[f"{side}.layers.0.final_layer_norm.bias"] = normal(dim)
    state["decoder.output_projection.weight"] = state["decoder.embed_tokens.weight"]
    return state


def _save_fairseq(path: Path, placeholder_values: tuple[float, float], modern: bool = False) -> Path:
    """A fairseq checkpoint as checkpoint_utils.save_state writes it, the two placeholders holding the values given."""
    model = _fairseq_model()
    for name, value in zip(_PLACEHOLDERS, placeholder_values, strict=True):
        model[name] = torch.tensor([value], dtype=torch.float32)
    args = argparse.Namespace(arch="transformer", task="translation", encoder_embed_dim=16, fp16=False,
                              share_decoder_input_output_embed=True, optimizer="adam", lr=[0.0005], seed=1)
    optimizer = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(16, 16),
                               "exp_avg_sq": torch.zeros(16, 16)}},
                 "param_groups": [{"lr": 0.0005, "betas": (0.9, 0.98), "eps": 1e-8, "params": [0]}]}
    checkpoint = {
        "args": None if modern else args,
        "model": model,
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": 4.2},
                               "num_updates": 10}],
        "extra_state": {"epoch": 2, "val_loss": 4.2, "best": 4.2, "previous_training_time": 12.5,
                        "train_iterator": {"epoch": 2, "iterations_in_epoch": 0, "shuffle": True}},
        "last_optimizer_state": optimizer,
    }
    if modern:
        checkpoint["cfg"] = {"_name": None, "common": {"fp16": False, "seed": 1},
                             "model": {"_name": "transformer", "encoder_embed_dim": 16},
                             "task": {"_name": "translation"}}
    torch.save(checkpoint, path)
    return path


def test_check_dtype_leaves_the_placeholder_out_of_the_verdict(tmp_path: Path) -> None:
    """Before: fp16 `unsafe` (1e30 overflows, the subnormal flushes), the placeholders among the tensors checked."""
    source = _save_fairseq(tmp_path / "checkpoint_best.pt", (1e30, 1e-41))
    code, report = run_json("check-dtype", str(source), "--fail-on", "error")
    assert code == 0, report
    assert report["targets"]["fp16"]["verdict"] == "lossy", report["targets"]["fp16"]
    assert report["targets"]["bf16"]["verdict"] == "lossy", report["targets"]["bf16"]
    checked = {row["name"] for row in report["targets"]["fp16"]["tensors"]}
    assert not checked & set(_PLACEHOLDERS), checked
    skipped = {row["name"]: row["reason"] for row in report["skipped"]}
    assert set(skipped) == set(_PLACEHOLDERS), skipped
    assert all("uninitialized" in reason and "fairseq" in reason for reason in skipped.values()), skipped
    text = run_cli("check-dtype", str(source))
    assert text.exit_code == 0, text.stderr
    said = " ".join(text.stdout.replace("│", " ").split())
    assert "2 not checked: fairseq's dtype placeholder `_float_tensor`" in said, text.stdout
    assert "left as they are" not in said, text.stdout


def test_a_float_tensor_of_more_than_one_value_is_still_checked(tmp_path: Path) -> None:
    """Only fairseq's one-value buffer is a placeholder: a tensor of eight values under the same name is weights."""
    model = _fairseq_model()
    model["encoder.embed_positions._float_tensor"] = torch.full((8,), 1e30)
    source = tmp_path / "not_a_placeholder.pt"
    torch.save({"model": model}, source)
    code, report = run_json("check-dtype", str(source), "--fail-on", "error")
    assert code == 1, report
    assert report["targets"]["fp16"]["verdict"] == "unsafe", report["targets"]["fp16"]
    # The decoder's one-value buffer beside it is still fairseq's placeholder.
    assert [row["name"] for row in report["skipped"]] == ["decoder.embed_positions._float_tensor"], report["skipped"]
    fp16 = {row["name"]: row["verdict"] for row in report["targets"]["fp16"]["tensors"]}
    assert fp16["encoder.embed_positions._float_tensor"] == "unsafe", fp16


def test_convert_to_fp16_casts_the_placeholder_instead_of_refusing(tmp_path: Path) -> None:
    """Before: exit 2, "casting to float16 would lose values in 2 tensor(s): encoder.embed_positions._float_tensor".
    A real value that overflows is still refused (the last lines)."""
    source = _save_fairseq(tmp_path / "checkpoint_last.pt", (1e30, 1e-41), modern=True)
    output = tmp_path / "model.safetensors"
    result = run_cli("convert", str(source), "--to", "safetensors", "--dtype", "float16", "--output", str(output))
    assert result.exit_code == 0, result.stderr
    model = _fairseq_model()
    with safe_open(str(output), "pt") as written:
        names = set(written.keys())
        assert set(_PLACEHOLDERS) <= names, names
        for name in _PLACEHOLDERS:
            assert written.get_tensor(name).dtype == torch.float16
        weight = written.get_tensor("encoder.layers.0.fc1.weight")
    assert torch.equal(weight, model["encoder.layers.0.fc1.weight"].half())
    overflowing = _fairseq_model()
    overflowing["encoder.layers.0.fc1.bias"][0] = 1e30
    real = tmp_path / "real_overflow.pt"
    torch.save({"model": overflowing}, real)
    refused = run_cli("convert", str(real), "--to", "safetensors", "--dtype", "float16",
                      "--output", str(tmp_path / "refused.safetensors"))
    assert refused.exit_code == 2, refused.stdout
    assert "encoder.layers.0.fc1.bias" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused.safetensors").exists()


def test_inspect_stats_raises_nothing_on_the_placeholder(tmp_path: Path) -> None:
    """Before: `nan-inf` (error) on a NaN placeholder, `fp16-overflow` (warn) on a 1e30 one."""
    source = _save_fairseq(tmp_path / "checkpoint_best.pt", (float("nan"), 1e30))
    code, report = run_json("inspect", str(source), "--stats", "--fail-on", "error")
    assert code == 0, report
    assert report["nested_key"] == "model", report["nested_key"]
    on_placeholder = [finding for finding in report["findings"] if finding["tensor"] in _PLACEHOLDERS]
    assert on_placeholder == [], on_placeholder
    # The weights beside it are still judged: a real NaN is still an error.
    broken = _fairseq_model()
    broken["decoder.layers.0.fc2.bias"][3] = float("nan")
    bad = tmp_path / "diverged.pt"
    torch.save({"model": broken}, bad)
    code, report = run_json("inspect", str(bad), "--stats", "--fail-on", "error")
    assert code == 1, report
    assert [f["tensor"] for f in report["findings"] if f["code"] == "nan-inf"] == ["decoder.layers.0.fc2.bias"]


def test_diff_keys_values_of_two_saves_of_the_same_weights(tmp_path: Path) -> None:
    """checkpoint_best.pt against checkpoint_last.pt holding the same weights: before, the placeholders' memory (1e30
    against a subnormal) was the one change shown, the layer changed most by 1e48."""
    best = _save_fairseq(tmp_path / "checkpoint_best.pt", (1e30, float("nan")))
    last = _save_fairseq(tmp_path / "checkpoint_last.pt", (1e-41, 0.0), modern=True)
    code, report = run_json("diff-keys", str(best), str(last), "--values")
    assert code == 0, report
    compared = {row["name"]: row for row in report["values"]}
    assert not set(compared) & set(_PLACEHOLDERS), sorted(compared)
    assert compared and all(row["identical"] for row in compared.values()), report["values"]
    assert all(layer["identical"] for layer in report["layers_changed_most"]), report["layers_changed_most"]
    note = next(note for note in report["notes"] if "_float_tensor" in note)
    assert note.startswith("2 tensors not compared (encoder.embed_positions._float_tensor, ...)"), note
    assert "uninitialized memory" in note, note
    # A weight that did change is still shown.
    changed = _fairseq_model()
    changed["encoder.layers.0.fc1.weight"] += 0.01
    other = tmp_path / "checkpoint_changed.pt"
    torch.save({"model": changed}, other)
    code, report = run_json("diff-keys", str(best), str(other), "--values")
    assert [row["name"] for row in report["values"] if not row["identical"]] == ["encoder.layers.0.fc1.weight"]


def _fairseq_fsdp_shard(path: Path) -> Path:
    """One rank's checkpoint_last-shard0.pt of fairseq's --ddp-backend fully_sharded (Trainer.state_dict: `model` is
    fairscale FSDP's local_state_dict, each wrapped module's parameters in FlattenParamsWrapper's `flat_param_0`, the
    buffers under their own names, and `fsdp_metadata` its local_metadata_dict)."""
    generator = torch.Generator().manual_seed(1)
    model = {"encoder.version": torch.Tensor([3]), "encoder.embed_positions._float_tensor": torch.zeros(1),
             "decoder.version": torch.Tensor([3]), "decoder.embed_positions._float_tensor": torch.zeros(1),
             "encoder.layers.0.flat_param_0": torch.randn(1584, generator=generator) * 0.05,
             "decoder.layers.0.flat_param_0": torch.randn(2128, generator=generator) * 0.05,
             "flat_param_0": torch.randn(640, generator=generator) * 0.05}
    shapes = [torch.Size((40, 16)), torch.Size((40, 16))]
    metadata = {"param_metadata": [{"fsdp_path": "", "params": {"flat_param_0": {
        "names": ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"], "shapes": shapes,
        "numels": [shape.numel() for shape in shapes], "padding": 0}}, "no_broadcast_optim_state": False,
        "shared_param_info": []}], "buffer_names": ["encoder.version", "decoder.version"]}
    torch.save({"args": None, "cfg": {"distributed_training": {"ddp_backend": "fully_sharded",
                                                               "distributed_world_size": 2}},
                "model": model, "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "num_updates": 5,
                                                       "optimizer_name": "FairseqAdam", "lr_scheduler_state": {}}],
                "task_state": {}, "extra_state": {"previous_training_time": 1.0}, "fsdp_metadata": metadata}, path)
    return path


def test_a_fairseq_fully_sharded_shard_is_named_with_its_consolidation(tmp_path: Path) -> None:
    """Before: inspect showed three 1-D tensors as the model's 4,352 parameters and warned of nothing."""
    source = _fairseq_fsdp_shard(tmp_path / "checkpoint_last-shard0.pt")
    code, report = run_json("inspect", str(source))
    assert code == 0, report
    # thirdparty39: named checkpoint_last-shardN.pt with its fsdp_metadata, it is said to be FSDP shard 0 (the reader's
    # warning, once), with fairseq's own call for its folder.
    warnings = [w for w in report["warnings"] if "flat param" in w]
    assert len(warnings) == 1, report["warnings"]
    warning = warnings[0]
    assert warning.startswith("checkpoint_last-shard0.pt is FSDP shard 0 of one fairseq model"), warning
    assert "3 flat parameters (4,352 values" in warning, warning
    assert "no other shard beside it" in warning and "fetch the others (checkpoint_last-shard1.pt, ...)" in warning
    # With its sibling beside it: fairseq's own call, with the count of shards there.
    torch.save(torch.load(source, weights_only=False), tmp_path / "checkpoint_last-shard1.pt")
    code, report = run_json("inspect", str(source))
    warning = next(w for w in report["warnings"] if "flat param" in w)
    assert "FullyShardedDataParallel.consolidate_shard_weights" in warning, warning
    assert f"load_model_ensemble_and_task([{str(tmp_path / 'checkpoint_last.pt')!r}], num_shards=2, " \
           "strict=False)" in warning, warning


def test_a_weight_named_flat_param_of_two_dimensions_is_no_fsdp_shard(tmp_path: Path) -> None:
    """Only 1-D `flat_param_N` tensors are fairscale's: a model's own 2-D parameter of that name is not warned of."""
    source = tmp_path / "own.pt"
    torch.save({"proj.flat_param_0": torch.randn(4, 4), "proj.bias": torch.zeros(4)}, source)
    code, report = run_json("inspect", str(source))
    assert code == 0, report
    assert not [w for w in report["warnings"] if "fairscale" in w], report["warnings"]
