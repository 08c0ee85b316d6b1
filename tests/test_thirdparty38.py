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

from tests.helpers import run_cli, run_json
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
