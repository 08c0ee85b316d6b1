"""Thirdparty38: metaseq's and fairseq's FSDP-sharded model-parallel parts (checkpoint_last-model_part-0-shard0.pt:
each model-parallel part's fairscale flat parameters split again over the data-parallel ranks; metaseq's OPT releases'
reshard-model_part-0.pt: each part's flat parameters in one file), diff-keys with the tensor-parallel part as B, and
plan-devices on one part.

metaseq and fairscale are not installed here: the files are written as metaseq's Trainer.state_dict writes them with
--ddp-backend fully_sharded --use-sharded-state and --model-parallel-size N (`{checkpoint}-model_part-{mp_rank}-shard
{dp_rank}.pt`: `model` is fairscale FSDP's local_state_dict, each wrapped module's parameters in FlattenParamsWrapper's
`flat_param_0`, chunked over the data-parallel ranks and the last chunks zero-padded, the buffers under their own
names; `shard_metadata` its local_metadata_dict), and as metaseq's scripts/reshard_fsdp.py (and the older
reshard_mp.py, which drops shard_metadata) write one file per part (`reshard-model_part-{mp_rank}.pt`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F

from tests.helpers import folder_refusals, run_cli, run_json
from tests.test_thirdparty37 import _fairseq_lm, _save_parts, _split


def _said(text: str) -> str:
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


def _fsdp_groups(part: OrderedDict[str, torch.Tensor]) -> list[tuple[str, list[str]]]:
    """How metaseq wraps its decoder in fairscale FSDP: each layer its own FullyShardedDataParallel (fsdp_path
    `decoder.layers.N`), the embeddings and the final layer norm in the outer one (fsdp_path ""); each group's
    parameter names relative to its path, in named_parameters() order. Buffers (version, the sinusoidal positions'
    _float_tensor) are no parameters."""
    groups: dict[str, list[str]] = {}
    for name in part:
        if name.endswith(("version", "_float_tensor")):
            continue
        if name.startswith("decoder.layers."):
            layer = ".".join(name.split(".")[:3])
            groups.setdefault(layer, []).append(name[len(layer) + 1:])
        else:
            groups.setdefault("", []).append(name)
    return [(path, names) for path, names in groups.items() if path] + [("", groups[""])]


def _flat_shards(part: OrderedDict[str, torch.Tensor], world: int) -> list[tuple[dict[str, torch.Tensor], dict]]:
    """One model-parallel part as `world` FSDP ranks' (local_state_dict, local_metadata_dict): each group's
    parameters flattened and concatenated, chunked as fairscale's _get_shard does (torch.chunk, the last chunks
    zero-padded to the first's size)."""
    buffers = [name for name in part if name.endswith(("version", "_float_tensor"))]
    shards: list[tuple[dict[str, torch.Tensor], dict]] = [
        ({name: part[name].clone() for name in buffers}, {"param_metadata": [], "buffer_names": list(buffers)})
        for _ in range(world)]
    for path, names in _fsdp_groups(part):
        full = [part[f"{path}.{name}" if path else name] for name in names]
        flat = torch.cat([t.reshape(-1) for t in full])
        chunks = list(flat.chunk(world))
        chunks += [flat.new_empty(0)] * (world - len(chunks))
        for rank, (state, metadata) in enumerate(shards):
            padding = chunks[0].numel() - chunks[rank].numel()
            state[f"{path}.flat_param_0" if path else "flat_param_0"] = F.pad(chunks[rank].clone(), [0, padding])
            metadata["param_metadata"].append({
                "fsdp_path": path, "params": {"flat_param_0": {
                    "names": names, "shapes": [t.shape for t in full], "numels": [t.numel() for t in full],
                    "padding": padding}},
                "no_broadcast_optim_state": False, "shared_param_info": []})
    return shards


def _metaseq_cfg(parts: int, world: int) -> dict[str, object]:
    return {"_name": None, "common": {"fp16": True, "model_parallel_size": parts},
            "distributed_training": {"ddp_backend": "fully_sharded", "use_sharded_state": True,
                                     "distributed_world_size": parts * world},
            "model": {"_name": "transformer_lm_megatron", "arch": "transformer_lm_megatron", "decoder_embed_dim": 16},
            "task": {"_name": "streaming_language_modeling"}}


def _save_metaseq_raw(folder: Path, parts: int = 2, world: int = 2,
                      stem: str = "checkpoint_last") -> OrderedDict[str, torch.Tensor]:
    """metaseq's training save: `{stem}-model_part-{r}-shard{s}.pt` for every model-parallel rank r and data-parallel
    rank s, as Trainer.state_dict writes them (cfg, model, criterion, optimizer_history, task_state, extra_state,
    last_optimizer_state, shard_metadata); the whole model's state dict is returned."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = _fairseq_lm()
    for mp_rank, part in enumerate(_split(whole, parts)):
        for dp_rank, (state, metadata) in enumerate(_flat_shards(part, world)):
            flat = {name: t for name, t in state.items() if "flat_param" in name}
            checkpoint = {
                "cfg": _metaseq_cfg(parts, world), "model": state, "criterion": None,
                "optimizer_history": [{"criterion_name": "VocabParallelCrossEntropyCriterion",
                                       "optimizer_name": "MemoryEfficientFP16Optimizer", "lr_scheduler_state": {},
                                       "num_updates": 12}],
                "task_state": {}, "extra_state": {"metrics": {}, "previous_training_time": 9.5, "val_loss": 3.1},
                "last_optimizer_state": {"state": {index: {"step": 12, "exp_avg": torch.zeros_like(t),
                                                           "exp_avg_sq": torch.zeros_like(t)}
                                                   for index, t in enumerate(flat.values())},
                                         "param_groups": [{"lr": 1e-4, "params": list(range(len(flat)))}]},
                "shard_metadata": metadata}
            torch.save(checkpoint, folder / f"{stem}-model_part-{mp_rank}-shard{dp_rank}.pt")
    return whole


def _save_metaseq_reshard(folder: Path, parts: int = 2, metadata: bool = True) -> OrderedDict[str, torch.Tensor]:
    """metaseq's OPT releases: one `reshard-model_part-{r}.pt` per model-parallel part, its data-parallel shards
    merged into one and still flat (reshard_fsdp --num-output-shards 1 --unflatten-weights False keeps
    shard_metadata, padding 0; the older reshard_mp.py drops it)."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = _fairseq_lm()
    for mp_rank, part in enumerate(_split(whole, parts)):
        ((state, shard_metadata),) = _flat_shards(part, 1)
        checkpoint: dict[str, object] = {
            "cfg": _metaseq_cfg(parts, 1), "model": state, "criterion": None,
            "optimizer_history": [{"criterion_name": "VocabParallelCrossEntropyCriterion", "num_updates": 12,
                                   "optimizer_name": "MemoryEfficientFP16Optimizer", "lr_scheduler_state": {}}],
            "task_state": {}, "extra_state": {"metrics": {}, "val_loss": 3.1}}
        if metadata:
            checkpoint["shard_metadata"] = shard_metadata
        torch.save(checkpoint, folder / f"reshard-model_part-{mp_rank}.pt")
    return whole


# --- diff-keys: the tensor-parallel part as B ---------------------------------------------------------------------


def test_diff_keys_says_tensor_parallel_part_when_b_is_the_part(tmp_path: Path) -> None:
    """Before: the whole model loaded into part 1's shapes gave 21 `shape` rows (and the embedding `vocab-size`) and
    offered resize_token_embeddings; only A as the part was told."""
    folder = tmp_path / "megatron"
    whole = _save_parts(folder)
    torch.save({"model": whole}, tmp_path / "whole.pt")
    code, report = run_json("diff-keys", str(tmp_path / "whole.pt"), str(folder / "model_part-1.pt"))
    assert code == 1, report
    reasons = {row["name"]: (row["reason"], row["detail"]) for row in report["mismatched"]}
    assert len(reasons) == 21, reasons
    assert reasons["decoder.embed_tokens.weight"] == ("tensor-parallel-part", "B holds 1/2 of it, split along dim 0")
    assert reasons["decoder.layers.0.fc2.weight"] == ("tensor-parallel-part", "B holds 1/2 of it, split along dim 1")
    assert not any("resize_token_embeddings" in note or "ignore_mismatched_sizes" in note
                   for note in report["notes"]), report["notes"]
    note = next(note for note in report["notes"] if "tensor-parallel parts" in note)
    assert note.startswith("21 tensors of B (decoder.embed_tokens.weight, decoder.layers.0.self_attn.k_proj.weight "
                           "and 19 more) are A's with one dimension divided by 2: B is one of 2 tensor-parallel "
                           "parts"), note
    assert "merge B's parts into one state dict" in note and "--model-parallel-size 2" in note, note
    # The text report names the reason too; two parts compared with each other are neither's slice of the other.
    said = _said(run_cli("diff-keys", str(tmp_path / "whole.pt"), str(folder / "model_part-1.pt")).stdout)
    assert "tensor-parallel-part" in said and "B holds 1/2 of it" in said, said
    code, report = run_json("diff-keys", str(folder / "model_part-0.pt"), str(folder / "model_part-1.pt"))
    assert code == 0 and report["mismatched"] == [], report["mismatched"]


# --- metaseq's FSDP-sharded model-parallel parts -------------------------------------------------------------------


def _unflatten_like_metaseq(states: list[dict]) -> dict[str, torch.Tensor]:
    """One part's shards unflattened as metaseq's reshard_fsdp_model_weights does with --unflatten-weights: each
    flat parameter's shards unpadded and concatenated, split by the metadata's numels, viewed in its shapes."""
    weights: dict[str, torch.Tensor] = {}
    first = states[0]["shard_metadata"]
    for index, group in enumerate(first["param_metadata"]):
        path = group["fsdp_path"]
        for flat_name, info in group["params"].items():
            key = f"{path}.{flat_name}" if path else flat_name
            pieces = []
            for state in states:
                pad = state["shard_metadata"]["param_metadata"][index]["params"][flat_name]["padding"]
                piece = state["model"][key]
                pieces.append(piece[:-pad] if pad else piece)
            flat = torch.cat(pieces)
            for name, tensor, shape in zip(info["names"], flat.split(info["numels"]), info["shapes"], strict=True):
                weights[f"{path}.{name}" if path else name] = tensor.view(shape)
    for name in first["buffer_names"]:
        weights[name] = states[0]["model"][name]
    return weights


def test_the_fixtures_shards_unflatten_to_the_model(tmp_path: Path) -> None:
    """The shards written here are what metaseq writes: its own unflattening (reshard_fsdp's), then Megatron's
    concatenation of the parts (stitch_fsdp_ckpt.reshard_megatron_parts), gives the whole model back."""
    whole = _save_metaseq_raw(tmp_path, parts=2, world=3)
    parts = [_unflatten_like_metaseq([torch.load(tmp_path / f"checkpoint_last-model_part-{r}-shard{s}.pt",
                                                 weights_only=False) for s in range(3)]) for r in range(2)]
    for name, tensor in whole.items():
        dim = 1 if name.endswith(("fc2.weight", "out_proj.weight")) else 0
        split = any(kind in name for kind in ("embed_tokens", "fc1", "k_proj", "q_proj", "v_proj")) or dim == 1
        merged = torch.cat([part[name] for part in parts], dim=dim) if split else parts[0][name]
        assert torch.equal(merged, tensor), name


def test_a_folder_of_fsdp_sharded_parts_is_said_with_how_to_consolidate(tmp_path: Path) -> None:
    """Before: "folder holds several weight files and no index (checkpoint_last-model_part-0-shard0.pt, ...); name
    one"."""
    folder = tmp_path / "opt-raw"
    whole = _save_metaseq_raw(folder, parts=2, world=2)
    for said in folder_refusals(folder):
        assert "folder holds 4 FSDP shards of the model-parallel parts of one metaseq model (checkpoint_last-" \
               "model_part-0-shard0.pt to checkpoint_last-model_part-1-shard1.pt: --model-parallel-size 2, each " \
               "part's weights flattened by fairscale's FullyShardedDataParallel and split over 2 data-parallel " \
               "ranks" in said, said
        assert "3 flat parameters (flat_param_N, 1,896 values in checkpoint_last-model_part-0-shard0.pt; " in said
        # thirdparty39: the merged model's parameters by the shard_metadata's shapes and the split modules' names.
        assert f"and the model merged {sum(t.numel() for t in whole.values()):,} (its split tensors" in said, said
        assert (f"python -m metaseq.scripts.consolidate_fsdp_shards {str(folder / 'checkpoint_last')!r} "
                f"--save-prefix {str(folder / 'checkpoint_last_consolidated')!r}") in said, said
    # What is at the output path already is not written over: the prefix is numbered.
    (folder / "checkpoint_last_consolidated.pt").mkdir()
    said = " ".join(run_cli("inspect", str(folder)).stderr.split())
    assert f"--save-prefix {str(folder / 'checkpoint_last_consolidated-2')!r}" in said, said


def test_one_fsdp_shard_of_a_part_read_alone_is_said_to_be_one(tmp_path: Path) -> None:
    """Before: 3 flat parameters counted as the model, and the one warning named fairseq's checkpoint_last-shardN.pt
    and an 'fsdp_metadata' these files do not have."""
    folder = tmp_path / "opt-raw"
    _save_metaseq_raw(folder, parts=2, world=2)
    code, report = run_json("inspect", str(folder / "checkpoint_last-model_part-1-shard0.pt"))
    assert code == 0, report
    warning = next(w for w in report["warnings"] if "FSDP shard" in w)
    assert warning.startswith("checkpoint_last-model_part-1-shard0.pt is, by its name, FSDP shard 0 of "
                              "model-parallel part 1 of one metaseq model"), warning
    assert "4 files beside it for 2 parts × 2 shards" in warning, warning
    assert "metaseq.scripts.consolidate_fsdp_shards" in warning, warning
    assert not any("fsdp_metadata" in w for w in report["warnings"]), report["warnings"]
    # A shard missing is named, and no consolidation offered.
    (folder / "checkpoint_last-model_part-0-shard1.pt").unlink()
    result = run_cli("inspect", str(folder))
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2, result.stdout
    assert "The 1 shard checkpoint_last-model_part-0-shard1.pt is not beside them" in said, said
    assert "consolidate_fsdp_shards '" not in said, said


def test_fairseq_fsdp_sharded_parts_name_fsdp_metadata(tmp_path: Path) -> None:
    """fairseq's Trainer saves the same shards with `fsdp_metadata`: metaseq's script (which reads shard_metadata)
    is not offered, fairscale's consolidate_shard_weights is."""
    folder = tmp_path / "fairseq-raw"
    _save_metaseq_raw(folder, parts=2, world=2)
    for path in sorted(folder.iterdir()):
        checkpoint = torch.load(path, weights_only=False)
        checkpoint["fsdp_metadata"] = checkpoint.pop("shard_metadata")
        torch.save(checkpoint, path)
    said = " ".join(run_cli("inspect", str(folder)).stderr.split())
    assert "of one fairseq model" in said, said
    assert "shard_metadata=[each shard's 'fsdp_metadata']" in said and "consolidate_fsdp_shards" not in said, said


def test_metaseqs_flat_reshard_parts_are_not_merged_by_name(tmp_path: Path) -> None:
    """Before: the OPT release's reshard-model_part-0.pt / -1.pt were "5 whole in every part (version,
    embed_positions, flat_param_0)", the model "merged" at one part's 3,794 parameters, and the Python given wrote
    part 0's flat parameters as the whole model."""
    folder = tmp_path / "opt-125m"
    _save_metaseq_reshard(folder)
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    said = " ".join(result.stderr.split())
    assert "folder holds 2 model-parallel parts of one metaseq model (reshard-model_part-0.pt to " \
           "reshard-model_part-1.pt; --model-parallel-size 2), each part's weights still flattened by fairscale's " \
           "FullyShardedDataParallel into 3 flat parameters (3,792 values in a part" in said, said
    assert "torch.cat" not in said and "whole in every part" not in said, said
    assert (f"python -m metaseq.scripts.reshard_fsdp --input {str(folder / 'reshard-model_part-0.pt')!r} --output "
            f"{str(tmp_path / 'opt-125m-unflat' / 'reshard-model_part-0.pt')!r} --num-output-shards 1 "
            "--unflatten-weights True") in said, said
    code, report = run_json("inspect", str(folder / "reshard-model_part-1.pt"))
    assert code == 0, report
    (warning,) = [w for w in report["warnings"] if "flat" in w]
    assert warning.startswith("reshard-model_part-1.pt is part 1 of the 2 model-parallel parts of one metaseq model "
                              "beside it (reshard-model_part-0.pt to reshard-model_part-1.pt), its weights still "
                              "flattened"), warning
    assert "merged, 3,794" not in warning and "metaseq.scripts.reshard_fsdp" in warning, warning


def test_flat_reshard_parts_without_shard_metadata_name_convert_to_singleton(tmp_path: Path) -> None:
    """metaseq's older reshard_mp.py dropped shard_metadata: only the model unflattens them."""
    folder = tmp_path / "opt-350m"
    _save_metaseq_reshard(folder, metadata=False)
    said = " ".join(run_cli("inspect", str(folder)).stderr.split())
    assert "They hold no shard_metadata to unflatten them by" in said, said
    assert f"python -m metaseq.scripts.convert_to_singleton {str(folder)!r}" in said, said
    # An unflattened part (reshard_fsdp --unflatten-weights True's output) is still an ordinary part.
    code, report = run_json("inspect", str(folder / "reshard-model_part-0.pt"))
    assert any("still flattened" in w for w in report["warnings"]), report["warnings"]


# --- plan-devices on one part ---------------------------------------------------------------------------------------


def test_plan_devices_on_one_part_says_the_plan_is_that_parts(tmp_path: Path) -> None:
    """Before: model_part-0.pt was headed and planned as the model ("3.8K parameters · weights 15.18 KB", "verdict:
    fits on the GPUs"), nothing in the plan or its JSON saying it was half of one; only a warning below it did."""
    folder = tmp_path / "megatron"
    whole = _save_parts(folder)
    torch.save({"model": whole}, tmp_path / "whole.pt")
    code, report = run_json("plan-devices", str(folder / "model_part-0.pt"), "--gpu", "1GB")
    assert code == 0, report
    _, whole_report = run_json("plan-devices", str(tmp_path / "whole.pt"), "--gpu", "1GB")
    assert whole_report["model_part"] is None
    part = report["model_part"]
    assert part == {"file": "model_part-0.pt", "rank": 0, "parts": 2, "part_params": report["num_params"],
                    "merged_params": sum(t.numel() for t in whole.values()),
                    "merged_weights_bytes": whole_report["weights_bytes"]}, part
    text = run_cli("plan-devices", str(folder / "model_part-0.pt"), "--gpu", "1GB")
    said = _said(text.stdout)
    assert "one part: model_part-0.pt is part 0 of 2 tensor-parallel parts of one fairseq model: this plan is that " \
           "part's alone, what each of the 2 GPUs of fairseq's --model-parallel-size 2 loads; merged, the model is " \
           "7.4K parameters, weights 29.45 KB at this dtype" in said, said
    assert "verdict: fits on the GPUs (every module is on a GPU; part 0 of 2 only)" in said, said


def test_shards_with_no_name_before_model_part_are_unflattened_part_by_part(tmp_path: Path) -> None:
    """metaseq's consolidate_fsdp_shards tells the parts apart by `-model_part-`: for `model_part-0-shard0.pt` it
    would take all four shards for one part's, so reshard_fsdp is named, one part at a time."""
    folder = tmp_path / "raw"
    _save_metaseq_raw(folder, stem="")
    for path in sorted(folder.iterdir()):
        path.rename(folder / path.name.removeprefix("-"))
    said = " ".join(run_cli("inspect", str(folder)).stderr.split())
    assert "folder holds 4 FSDP shards" in said and "consolidate_fsdp_shards" not in said, said
    assert (f"python -m metaseq.scripts.reshard_fsdp --input {str(folder / 'model_part-0-shard*.pt')!r} --output "
            f"{str(tmp_path / 'raw-unflat' / 'model_part-0.pt')!r}") in said, said
    assert "the same for each part to model_part-1" in said, said
