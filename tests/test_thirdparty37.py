"""Thirdparty37: fairscale FSDP flat parameters against the model they flatten (diff-keys), and fairseq's
model-parallel parts (model_part-0.pt, model_part-1.pt, ...; checkpoint_last-model_part-0.pt; metaseq's
reshard-model_part-0.pt) read alone, as a folder, against the whole model and planned onto devices; then two
training layouts whose averaged weights sat beside the ones read without a word: fairseq's --store-ema
(extra_state['ema'], Trainer.state_dict) and torchvision's reference scripts' model_ema (an AveragedModel's state dict).

fairseq and fairscale are not installed here: the files are written as their save code writes them (fairseq's
checkpoint_utils.save_state: `args` / `cfg`, `model`, `optimizer_history`, `extra_state`), the model-parallel parts'
weights split as fairseq's model_parallel modules split them (Megatron's ColumnParallelLinear for k/q/v_proj and fc1
and VocabParallelEmbedding for embed_tokens along dim 0, RowParallelLinear for out_proj and fc2 along dim 1, their
biases and the layer norms whole in every part), the split metaseq's scripts/reshard_mp.py undoes.
"""

from __future__ import annotations

import argparse
import re
from collections import OrderedDict
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json
from tests.test_third_party_layouts36 import _fairseq_fsdp_shard, _save_fairseq


def _said(text: str) -> str:
    """Rich's output as one line: table borders and wrapping gone."""
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


# --- fairscale FSDP flat parameters in diff-keys ---------------------------------------------------------------


def test_diff_keys_names_fairscale_flat_params_and_their_unflattening(tmp_path: Path) -> None:
    """Before: A's three flat_param_0 and B's 45 weights were all `unknown: no known cause`."""
    shard = _fairseq_fsdp_shard(tmp_path / "checkpoint_last-shard0.pt")
    whole = _save_fairseq(tmp_path / "checkpoint_best.pt", (0.0, 0.0))
    code, report = run_json("diff-keys", str(shard), str(whole))
    assert code == 1, report
    unexpected = {row["name"]: row for row in report["unexpected"]}
    assert set(unexpected) == {"flat_param_0", "encoder.layers.0.flat_param_0", "decoder.layers.0.flat_param_0"}
    assert {row["reason"] for row in unexpected.values()} == {"fairscale-flat-param"}, unexpected
    assert unexpected["decoder.layers.0.flat_param_0"]["detail"].startswith(
        "2,128 values of decoder.layers.0 in one 1-D tensor, padded"), unexpected
    assert "the modules no inner FSDP wraps" in unexpected["flat_param_0"]["detail"], unexpected
    missing = {row["name"]: row for row in report["missing"]}
    assert {row["reason"] for row in missing.values()} == {"fairscale-flat-param"}, {
        name: row["reason"] for name, row in missing.items() if row["reason"] != "fairscale-flat-param"}
    assert missing["decoder.layers.0.fc1.weight"]["detail"] == "flattened into A's decoder.layers.0.flat_param_0"
    assert missing["encoder.embed_tokens.weight"]["detail"] == "flattened into A's flat_param_0"
    # The output layer too, which was "task-head: initialised at random".
    assert missing["decoder.output_projection.weight"]["detail"] == "flattened into A's flat_param_0"
    note = next(note for note in report["notes"] if "fairscale FSDP flat parameter" in note)
    assert note.startswith("A holds 3 fairscale FSDP flat parameters (encoder.layers.0.flat_param_0, "
                           "decoder.layers.0.flat_param_0 and 1 more)"), note
    assert "consolidate_shard_weights(shard_weights=[each file's 'model'], shard_metadata=[each file's " \
           "'fsdp_metadata'])" in note, note
    assert "local_state_dict()" in note and "FULL_STATE_DICT" in note, note
    # torch's FSDP note is not given for fairscale's parameters.
    assert not any("use_orig_params" in n for n in report["notes"]), report["notes"]
    text = run_cli("diff-keys", str(shard), str(whole))
    said = _said(text.stdout)
    assert "fairscale-flat-param" in said and "fsdp_metadata" in said, text.stdout


def test_a_two_dimensional_flat_param_name_is_not_called_fairscale(tmp_path: Path) -> None:
    """A model's own 2-D `proj.flat_param_0` missing from the other side stays what it was."""
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"proj.flat_param_0": torch.randn(4, 4), "proj.bias": torch.zeros(4)}, a)
    torch.save({"proj.weight": torch.randn(4, 4), "proj.bias": torch.zeros(4)}, b)
    code, report = run_json("diff-keys", str(a), str(b))
    assert code == 1, report
    assert [row["reason"] for row in report["unexpected"]] != ["fairscale-flat-param"], report["unexpected"]
    assert not any("fairscale" in note for note in report["notes"]), report["notes"]


# --- fairseq's model-parallel parts ------------------------------------------------------------------------------

# Which of fairseq's model-parallel modules split along which dimension (fairseq/model_parallel: ColumnParallelLinear,
# VocabParallelEmbedding along 0; RowParallelLinear's weight along 1), as the parts below are written.
_DIM0 = re.compile(r"embed_tokens|fc1|[kqv]_proj|qkv_proj")
_DIM1 = re.compile(r"(fc2|out_proj)\.weight")


def _fairseq_lm(dim: int = 16, vocab: int = 48, layers: int = 2,
                fused_qkv: bool = False) -> OrderedDict[str, torch.Tensor]:
    """A whole `transformer_lm_megatron` state dict (decoder only, sinusoidal positions), in fairseq's order."""
    generator = torch.Generator().manual_seed(7)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.05

    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    state["decoder.version"] = torch.Tensor([3])
    state["decoder.embed_tokens.weight"] = normal(vocab, dim)
    state["decoder.embed_positions._float_tensor"] = torch.zeros(1)
    for layer in range(layers):
        at = f"decoder.layers.{layer}."
        projections = ("qkv_proj",) if fused_qkv else ("k_proj", "v_proj", "q_proj")
        for projection in projections:
            width = 3 * dim if projection == "qkv_proj" else dim
            state[f"{at}self_attn.{projection}.weight"] = normal(width, dim)
            state[f"{at}self_attn.{projection}.bias"] = normal(width)
        state[f"{at}self_attn.out_proj.weight"] = normal(dim, dim)
        state[f"{at}self_attn.out_proj.bias"] = normal(dim)
        state[f"{at}self_attn_layer_norm.weight"] = 1 + normal(dim)
        state[f"{at}self_attn_layer_norm.bias"] = normal(dim)
        state[f"{at}fc1.weight"] = normal(4 * dim, dim)
        state[f"{at}fc1.bias"] = normal(4 * dim)
        state[f"{at}fc2.weight"] = normal(dim, 4 * dim)
        state[f"{at}fc2.bias"] = normal(dim)
        state[f"{at}final_layer_norm.weight"] = 1 + normal(dim)
        state[f"{at}final_layer_norm.bias"] = normal(dim)
    state["decoder.layer_norm.weight"] = 1 + normal(dim)
    state["decoder.layer_norm.bias"] = normal(dim)
    return state


def _split(state: OrderedDict[str, torch.Tensor], parts: int) -> list[OrderedDict[str, torch.Tensor]]:
    """Each rank's slices, as Megatron's layers hold them: column-parallel along 0, row-parallel along 1."""
    ranks: list[OrderedDict[str, torch.Tensor]] = [OrderedDict() for _ in range(parts)]
    for name, tensor in state.items():
        if _DIM1.search(name):
            slices = tensor.chunk(parts, dim=1)
        elif _DIM0.search(name):
            slices = tensor.chunk(parts, dim=0)
        else:
            slices = (tensor,) * parts
        for rank in range(parts):
            ranks[rank][name] = slices[rank].clone()
    return ranks


def _save_parts(folder: Path, parts: int = 2, stem: str = "", modern: bool = False,
                state: OrderedDict[str, torch.Tensor] | None = None) -> OrderedDict[str, torch.Tensor]:
    """The parts of a fairseq --model-parallel-size save, as checkpoint_utils.save_state writes each rank's file
    (`{stem}model_part-{rank}.pt`); the whole model's state dict is returned."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = state if state is not None else _fairseq_lm()
    args = argparse.Namespace(arch="transformer_lm_megatron", task="language_modeling", model_parallel_size=parts,
                              decoder_embed_dim=16, share_decoder_input_output_embed=True)
    for rank, part in enumerate(_split(whole, parts)):
        checkpoint = {"args": None if modern else args, "model": part,
                      "optimizer_history": [{"criterion_name": "VocabParallelCrossEntropyCriterion",
                                             "optimizer_name": "FairseqAdam", "lr_scheduler_state": {},
                                             "num_updates": 10}],
                      "extra_state": {"epoch": 1, "val_loss": 3.5}}
        if modern:
            checkpoint["cfg"] = {"_name": None, "common": {"fp16": True, "seed": 1},
                                 "model_parallel": {"model_parallel_size": parts},
                                 "model": {"_name": "transformer_lm_megatron", "decoder_embed_dim": 16},
                                 "task": {"_name": "language_modeling"}}
        torch.save(checkpoint, folder / f"{stem}model_part-{rank}.pt")
    return whole


def _merge_code(said: str) -> str:
    """The Python a message gives to merge the parts."""
    match = re.search(r"\((import argparse, torch;.*\)) writes the whole model", said)
    assert match is not None, said
    return match[1]


def _merged_equals(code: str, whole: OrderedDict[str, torch.Tensor], written: Path) -> None:
    exec(code, {})  # noqa: S102 - the message's own code, run on files this test wrote
    merged = torch.load(written, weights_only=True)
    assert list(merged) == list(whole)
    for name, tensor in whole.items():
        assert torch.equal(merged[name], tensor), name


def test_a_folder_of_parts_is_said_to_be_one_model_split_and_how_to_merge(tmp_path: Path) -> None:
    """Before: "folder holds several weight files and no index (model_part-0.pt, model_part-1.pt); name one"."""
    folder = tmp_path / "megatron"
    whole = _save_parts(folder)
    for command in (("inspect",), ("plan-devices", "--gpu", "1GB"), ("diff-keys", str(tmp_path / "other.pt"))):
        args = [command[0], str(folder), *command[1:]] if command[0] != "diff-keys" else \
            ["diff-keys", str(folder), command[1]]
        torch.save(whole, tmp_path / "other.pt")
        result = run_cli(*args)
        assert result.exit_code == 2, (command, result.stdout)
        assert result.stdout == "", result.stdout
        said = " ".join(result.stderr.split())
        assert "Traceback" not in said and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "folder holds 2 tensor-parallel parts of one fairseq model (model_part-0.pt to model_part-1.pt" in \
            said, said
        assert "17 tensors split along dim 0 (embed_tokens, k_proj, v_proj, q_proj, fc1), 4 tensors split along " \
               "dim 1 (out_proj, fc2) and 16 whole in every part (version, embed_positions, out_proj.bias, " \
               "self_attn_layer_norm, fc2.bias, final_layer_norm, ...)" in said, said
        merged_params = sum(t.numel() for t in whole.values())
        assert f"merged, the model holds {merged_params:,} parameters" in said, said
    # The Python it gives writes the whole model back, tensor for tensor, beside the parts.
    _merged_equals(_merge_code(said), whole, folder / "model.pt")


def test_checkpoint_last_parts_with_cfg_and_four_ranks(tmp_path: Path) -> None:
    """fairseq's Trainer names a rank's save checkpoint_last-model_part-R.pt; a cfg (OmegaConf.to_container) and no
    args. Four parts: fc1 (64 rows) splits into 16, k_proj (16 rows) into 4."""
    folder = tmp_path / "checkpoints"
    whole = _save_parts(folder, parts=4, stem="checkpoint_last-", modern=True)
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    said = " ".join(result.stderr.split())
    assert "folder holds 4 tensor-parallel parts of one fairseq model (checkpoint_last-model_part-0.pt to " \
           "checkpoint_last-model_part-3.pt; fairseq's --model-parallel-size 4)" in said, said
    assert "--model-parallel-size 4" in said
    _merged_equals(_merge_code(said), whole, folder / "checkpoint_last.pt")


def test_one_part_read_alone_is_said_to_be_a_slice(tmp_path: Path) -> None:
    """Before: inspect showed part 1 as a whole model of 3,794 parameters and said nothing; plan-devices planned it
    as the model; diff-keys against the whole model called 21 tensors `shape` (the architecture differs) and the
    embedding `vocab-size`, and offered resize_token_embeddings."""
    folder = tmp_path / "megatron"
    whole = _save_parts(folder)
    torch.save({"model": whole}, tmp_path / "whole.pt")
    code, report = run_json("inspect", str(folder / "model_part-1.pt"))
    assert code == 0, report
    warning = next(w for w in report["warnings"] if "tensor-parallel" in w)
    assert warning.startswith("model_part-1.pt is part 1 of the 2 tensor-parallel parts of one fairseq model beside "
                              "it (model_part-0.pt to model_part-1.pt): 17 tensors split along dim 0"), warning
    merged_params = sum(t.numel() for t in whole.values())
    assert f"({report['num_params']:,} parameters; merged, {merged_params:,})" in warning, warning
    _merged_equals(_merge_code(warning), whole, folder / "model.pt")
    (folder / "model.pt").unlink()

    code, report = run_json("diff-keys", str(folder / "model_part-0.pt"), str(tmp_path / "whole.pt"))
    assert code == 1, report
    reasons = {row["name"]: (row["reason"], row["detail"]) for row in report["mismatched"]}
    assert len(reasons) == 21, reasons
    assert reasons["decoder.embed_tokens.weight"] == ("tensor-parallel-part", "A holds 1/2 of it, split along dim 0")
    assert reasons["decoder.layers.1.fc2.weight"] == ("tensor-parallel-part", "A holds 1/2 of it, split along dim 1")
    assert not any("resize_token_embeddings" in note or "ignore_mismatched_sizes" in note
                   for note in report["notes"]), report["notes"]
    note = next(note for note in report["notes"] if "tensor-parallel parts" in note)
    assert note.startswith("21 tensors of A (decoder.embed_tokens.weight, decoder.layers.0.self_attn.k_proj.weight "
                           "and 19 more) are B's with one dimension divided by 2"), note
    assert any("Merge the parts into one state dict" in w for w in report["warnings"]), report["warnings"]

    code, report = run_json("plan-devices", str(folder / "model_part-0.pt"), "--gpu", "1GB")
    assert code == 0, report
    assert any(w.startswith("model_part-0.pt is part 0 of the 2 tensor-parallel parts") for w in report["warnings"])


def test_a_fused_qkv_proj_is_merged_by_metaseqs_script(tmp_path: Path) -> None:
    """metaseq's fused qkv_proj holds each rank's third of q, k and v in turn: a plain torch.cat interleaves them
    wrongly, so metaseq's reshard_mp (which views it as 3 × rows) is named instead."""
    folder = tmp_path / "opt"
    _save_parts(folder, stem="reshard-", modern=True, state=_fairseq_lm(fused_qkv=True))
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    said = " ".join(result.stderr.split())
    assert "qkv_proj" in said, said
    assert (f"python -m metaseq.scripts.reshard_mp --input {str(folder / 'reshard-model_part-*.pt')!r} --output "
            f"{str(folder / 'reshard.pt')!r} --num-output-parts 1") in said, said
    assert "import argparse, torch" not in said, said


def test_a_missing_rank_is_said(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    _save_parts(folder, parts=4)
    (folder / "model_part-2.pt").unlink()
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    said = " ".join(result.stderr.split())
    assert "folder holds 3 of the 4 tensor-parallel parts of one fairseq model (model_part-0.pt to " \
           "model_part-3.pt; fairseq's --model-parallel-size 4)" in said, said
    assert "The 1 part of rank 2 is not beside them, and no merge is whole without every part" in said, said
    assert "torch.cat" not in said, said  # the code that merges names the parts 0 to 3
    code, report = run_json("inspect", str(folder / "model_part-3.pt"))
    warning = next(w for w in report["warnings"] if "tensor-parallel" in w)
    assert warning.startswith("model_part-3.pt is part 3 of 3 of the 4 tensor-parallel parts"), warning
    assert "The 1 part of rank 2 is not beside them" in warning, warning


def test_a_lone_part_and_look_alike_names(tmp_path: Path) -> None:
    """A part whose siblings were not copied is still said to be one (by its name and module names); a file named
    like a part holding no tensor fairseq splits, and two saves' parts in one folder, are not called parts."""
    lone = tmp_path / "lone"
    _save_parts(lone)
    (lone / "model_part-1.pt").unlink()
    code, report = run_json("inspect", str(lone / "model_part-0.pt"))
    assert code == 0, report
    warning = next(w for w in report["warnings"] if "model_part" in w)
    assert warning.startswith("model_part-0.pt is, by its name, one rank's part of a fairseq model trained with "
                              "--model-parallel-size (model_part-R.pt), and no other part is beside it"), warning

    other = tmp_path / "other"
    other.mkdir()
    torch.save({"classifier.weight": torch.randn(3, 4)}, other / "model_part-0.pt")
    code, report = run_json("inspect", str(other / "model_part-0.pt"))
    assert code == 0, report
    assert not [w for w in report["warnings"] if "model_part" in w or "tensor-parallel" in w], report["warnings"]

    two_saves = tmp_path / "two"
    _save_parts(two_saves, stem="checkpoint_best-")
    _save_parts(two_saves, stem="checkpoint_last-")
    result = run_cli("inspect", str(two_saves))
    assert result.exit_code == 2 and "several weight files" in result.stderr, result.stderr
    # One part of such a folder compares with its own save's parts only.
    code, report = run_json("inspect", str(two_saves / "checkpoint_best-model_part-0.pt"))
    warning = next(w for w in report["warnings"] if "tensor-parallel" in w)
    assert "(checkpoint_best-model_part-0.pt to checkpoint_best-model_part-1.pt)" in warning, warning


def test_split_layout_tells_a_split_by_shapes_that_differ() -> None:
    """A tensor no fairseq module name says is split, whose shapes differ between parts in one dimension (an uneven
    vocabulary split), is split along it; one whose shapes differ in two dimensions, or that a part lacks, is not
    alike in every part."""
    from weightdoctor.checkpoint.model_parts import split_layout

    first = {"head.table": (25, 16), "odd.weight": (4, 4), "only_here.weight": (2,), "norm.weight": (16,)}
    second = {"head.table": (23, 16), "odd.weight": (3, 5), "norm.weight": (16,)}
    layout = split_layout([first, second], 2)
    assert layout.split == {"head.table": 0}, layout
    assert layout.by_shape == ("head.table",)
    assert layout.whole == ("norm.weight",)
    assert set(layout.differing) == {"odd.weight", "only_here.weight"}, layout


# --- fairseq's --store-ema and torchvision's reference-scripts model_ema -------------------------------------------


def _fairseq_ema_checkpoint(path: Path, fp32_copy: bool = True, modern: bool = True) -> OrderedDict[str, torch.Tensor]:
    """A fairseq checkpoint as Trainer.state_dict writes it with --store-ema (and --ema-fp32): the EMA model's state
    dict in extra_state['ema'], its float32 copy in extra_state['ema_fp32_params']; the EMA is returned."""
    model = _fairseq_lm()
    ema = OrderedDict((name, tensor * 0.5) for name, tensor in model.items())
    extra: dict[str, object] = {"metrics": {}, "previous_training_time": 3.0, "epoch": 2, "ema": ema}
    if fp32_copy:
        extra["ema_fp32_params"] = OrderedDict((name, tensor.float()) for name, tensor in ema.items()
                                               if tensor.is_floating_point())
    checkpoint: dict[str, object] = {
        "model": model, "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "num_updates": 9,
                                               "optimizer_name": "FairseqAdam", "lr_scheduler_state": {}}],
        "task_state": {}, "extra_state": extra}
    if modern:
        checkpoint.update(args=None, cfg={"_name": None, "ema": {"store_ema": True, "ema_decay": 0.9999,
                                                                  "ema_fp32": fp32_copy},
                                          "model": {"_name": "transformer_lm"}})
    else:
        checkpoint["args"] = argparse.Namespace(arch="transformer_lm", store_ema=True, ema_decay=0.999)
    torch.save(checkpoint, path)
    return ema


def test_a_fairseq_ema_beside_the_model_is_said_and_readable(tmp_path: Path) -> None:
    """Before: model read, and extra_state shown as "dict, 5 entries": nothing said the EMA's tensors were in it."""
    source = tmp_path / "checkpoint_best.pt"
    ema = _fairseq_ema_checkpoint(source)
    code, report = run_json("inspect", str(source))
    assert code == 0, report
    assert report["nested_key"] == "model", report["nested_key"]
    note = next(w for w in report["warnings"] if "--store-ema" in w)
    assert note.startswith("checkpoint_best.pt: a fairseq training checkpoint saved with --store-ema: model is read, "
                           "the raw training weights that fairseq-generate and load_model_ensemble load; "
                           f"extra_state.ema beside it holds the EMA model's {len(ema)} tensors "
                           "(ema_decay 0.9999)"), note
    assert "checkpoint_utils.load_ema_from_checkpoint(path)" in note, note
    assert "extra_state.ema_fp32_params is its float32 copy (--ema-fp32)" in note, note
    # What the note offers reads the EMA itself.
    code, report = run_json("inspect", str(source), "--key", "extra_state.ema")
    assert code == 0, report
    assert report["nested_key"] == "extra_state.ema"
    assert report["num_params"] == sum(t.numel() for t in ema.values()), report["num_params"]
    # fairseq 0.10's args (a Namespace) give the decay too; no fp32 copy, no word of one.
    older = tmp_path / "checkpoint_last.pt"
    _fairseq_ema_checkpoint(older, fp32_copy=False, modern=False)
    code, report = run_json("inspect", str(older))
    note = next(w for w in report["warnings"] if "--store-ema" in w)
    assert "(ema_decay 0.999)" in note and "ema_fp32_params" not in note, note


def test_a_fairseq_checkpoint_without_ema_says_nothing_of_one(tmp_path: Path) -> None:
    source = _save_fairseq(tmp_path / "checkpoint_best.pt", (0.0, 0.0))
    code, report = run_json("inspect", str(source))
    assert code == 0, report
    assert not [w for w in report["warnings"] if "ema" in w.lower()], report["warnings"]


def _torchvision_reference(path: Path, ema_prefix: str = "module.") -> dict[str, torch.Tensor]:
    """A checkpoint as torchvision's references/classification/train.py saves it with --model-ema: model_ema is
    utils.ExponentialMovingAverage (a torch.optim.swa_utils.AveragedModel), its state dict `n_averaged` then the
    model's names under `module.`."""
    generator = torch.Generator().manual_seed(3)
    model = {"conv1.weight": torch.randn(8, 3, 3, 3, generator=generator), "bn1.weight": torch.ones(8),
             "bn1.bias": torch.zeros(8), "bn1.running_mean": torch.zeros(8), "bn1.running_var": torch.ones(8),
             "bn1.num_batches_tracked": torch.tensor(7), "fc.weight": torch.randn(10, 8, generator=generator),
             "fc.bias": torch.zeros(10)}
    averaged = {"n_averaged": torch.tensor(120),
                **{f"{ema_prefix}{name}": tensor * 0.9 for name, tensor in model.items()}}
    args = argparse.Namespace(model="resnet18", model_ema=True, model_ema_steps=32, model_ema_decay=0.99998)
    torch.save({"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 0.5, "params": list(range(5))}]},
                "lr_scheduler": {"last_epoch": 4, "_step_count": 5}, "epoch": 4, "args": args,
                "model_ema": averaged}, path)
    return model


def test_torchvision_references_model_ema_is_said_with_how_it_loads(tmp_path: Path) -> None:
    """Before: "model_ema (a state dict of 9 tensors: pick it with --key)", nothing of n_averaged or module."""
    source = tmp_path / "model_4.pth"
    model = _torchvision_reference(source)
    code, report = run_json("inspect", str(source))
    assert code == 0, report
    assert report["nested_key"] == "model"
    note = next(w for w in report["warnings"] if "AveragedModel" in w)
    assert note.startswith("model_4.pth: a torchvision reference-scripts checkpoint (references/*/train.py: model, "
                           "optimizer, lr_scheduler, epoch, args) with an averaged copy of the model: model is read, "
                           "the raw training weights; model_ema beside it is torch.optim.swa_utils.AveragedModel's "
                           "state dict"), note
    assert "its --test-only with --model-ema evaluates model_ema" in note, note
    # The code the note gives loads the EMA into the model's names, every one of them.
    loaded = torch.load(source, weights_only=False)
    code_said = re.search(r"\((\{k\.removeprefix.*\})\)$", note)
    assert code_said is not None, note
    state = eval(code_said[1], {"checkpoint": loaded})  # noqa: S307 - the note's own expression, on this test's file
    assert set(state) == set(model), sorted(state)
    # --key model_ema against the model: diff-keys sees module. as the wrapper prefix it is, n_averaged as a buffer.
    code, report = run_json("diff-keys", str(source), str(source), "--key", "model_ema")
    reasons = {row["name"]: row["reason"] for row in report["unexpected"]}
    assert reasons.pop("n_averaged") == "buffer", reasons
    assert set(reasons.values()) == {"wrapper-prefix"}, reasons
    assert report["matched_after_renames"] == len(model), report


def test_an_averaged_copy_of_another_model_is_not_called_the_models(tmp_path: Path) -> None:
    """n_averaged beside names that are not the model's own under module. (another model, or no module. prefix): no
    note."""
    source = tmp_path / "mixed.pth"
    _torchvision_reference(source, ema_prefix="")
    code, report = run_json("inspect", str(source))
    assert code == 0, report
    assert not [w for w in report["warnings"] if "AveragedModel" in w], report["warnings"]
