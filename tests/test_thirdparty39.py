"""Thirdparty39: fairseq's and metaseq's FSDP shards of a model with no model parallelism (checkpoint_last-shard0.pt,
checkpoint_last-shard1.pt, ...), the metadata key each writes (metaseq's Trainer: `shard_metadata`; fairseq's:
`fsdp_metadata`) in diff-keys and inspect, and the parameters a flat part holds by that metadata's shapes.

metaseq, fairseq and fairscale are not installed here: the files are written as their Trainer.state_dict writes them
with --ddp-backend fully_sharded --use-sharded-state at --model-parallel-size 1 (Trainer.checkpoint_suffix is
`-shard{data_parallel_rank}` with no `-model_part-R` before it; `model` is fairscale FSDP's local_state_dict, each
wrapped module's parameters in one 1-D `flat_param_0`, chunked over the ranks and the last chunks zero-padded, the
buffers under their own names; beside it the local_metadata_dict that unflattens them).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from tests.helpers import folder_refusals, run_cli, run_json
from tests.test_thirdparty37 import _fairseq_lm
from tests.test_thirdparty38 import _flat_shards, _metaseq_cfg, _save_metaseq_reshard


def _said(text: str) -> str:
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


def _save_fsdp_shards(folder: Path, world: int = 2, key: str = "shard_metadata", stem: str = "checkpoint_last",
                      skip: tuple[int, ...] = ()) -> OrderedDict[str, torch.Tensor]:
    """`{stem}-shard{rank}.pt` for every data-parallel rank of a model with no model parallelism, the metadata under
    `key` (metaseq's Trainer: shard_metadata; fairseq's: fsdp_metadata, beside `args`); the whole model is returned."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = _fairseq_lm()
    for rank, (state, metadata) in enumerate(_flat_shards(whole, world)):
        if rank in skip:
            continue
        checkpoint: dict[str, object] = {
            "cfg": _metaseq_cfg(1, world), "model": state, "criterion": None,
            "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                                   "lr_scheduler_state": {}, "num_updates": 12}],
            "task_state": {}, "extra_state": {"metrics": {}, "previous_training_time": 9.5}, key: metadata}
        if key == "fsdp_metadata":
            checkpoint["args"] = None
        torch.save(checkpoint, folder / f"{stem}-shard{rank}.pt")
    return whole


def _params(state: OrderedDict[str, torch.Tensor]) -> int:
    return sum(tensor.numel() for tensor in state.values())


def test_the_fixtures_shards_hold_the_whole_model(tmp_path: Path) -> None:
    """The shards concatenated, unpadded and split by the metadata's numels give the model back (what fairscale's
    consolidate_shard_weights does), so the counts asserted below are the model's."""
    whole = _save_fsdp_shards(tmp_path, world=3)
    states = [torch.load(tmp_path / f"checkpoint_last-shard{rank}.pt", weights_only=False) for rank in range(3)]
    rebuilt: dict[str, torch.Tensor] = {}
    for index, group in enumerate(states[0]["shard_metadata"]["param_metadata"]):
        path = group["fsdp_path"]
        key = f"{path}.flat_param_0" if path else "flat_param_0"
        pieces = []
        for state in states:
            padding = state["shard_metadata"]["param_metadata"][index]["params"]["flat_param_0"]["padding"]
            pieces.append(state["model"][key][:-padding] if padding else state["model"][key])
        info = group["params"]["flat_param_0"]
        for name, tensor, shape in zip(info["names"], torch.cat(pieces).split(info["numels"]), info["shapes"],
                                       strict=True):
            rebuilt[f"{path}.{name}" if path else name] = tensor.view(shape)
    assert set(rebuilt) | set(states[0]["shard_metadata"]["buffer_names"]) == set(whole)
    assert all(torch.equal(rebuilt[name], whole[name]) for name in rebuilt)


# --- a folder of FSDP shards with no model parallelism ------------------------------------------------------------


def test_a_folder_of_metaseq_fsdp_shards_is_refused_with_how_to_consolidate(tmp_path: Path) -> None:
    """Before: "folder holds several weight files and no index (checkpoint_last-shard0.pt, ...); name one"."""
    folder = tmp_path / "run"
    whole = _save_fsdp_shards(folder, world=2)
    for said in folder_refusals(folder):
        assert "folder holds 2 FSDP shards of one metaseq model (checkpoint_last-shard0.pt to " \
               "checkpoint_last-shard1.pt" in said, said
        assert "with no model parallelism" in said and "flat_param_N" in said, said
        # The model's size by the shard_metadata's shapes, not the shard's padded flat values.
        assert f"unflattened by its shard_metadata's shapes, the model holds {_params(whole):,} parameters" in said
        assert (f"python -m metaseq.scripts.consolidate_fsdp_shards {str(folder / 'checkpoint_last')!r} "
                f"--save-prefix {str(folder / 'checkpoint_last_consolidated')!r}") in said, said
        assert "fsdp_metadata" not in said, said
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_last-shard0.pt", "checkpoint_last-shard1.pt"]


def test_a_folder_of_fairseq_fsdp_shards_names_fsdp_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    _save_fsdp_shards(folder, world=3, key="fsdp_metadata", stem="checkpoint_best")
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    said = " ".join(result.stderr.split())
    assert "folder holds 3 FSDP shards of one fairseq model (checkpoint_best-shard0.pt to " \
           "checkpoint_best-shard2.pt" in said, said
    assert "consolidate_shard_weights(shard_weights=[each shard's 'model'], shard_metadata=[each shard's " \
           "'fsdp_metadata'])" in said, said
    assert str(folder / "checkpoint_best_consolidated.pt") in said and "consolidate_fsdp_shards" not in said, said
    assert f"load_model_ensemble_and_task([{str(folder / 'checkpoint_best.pt')!r}], num_shards=3, strict=False)" \
           in said, said


def test_a_missing_shard_is_said(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    _save_fsdp_shards(folder, world=3, skip=(1,))
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert "The 1 shard checkpoint_last-shard1.pt is not beside them" in said, said
    assert "consolidate_fsdp_shards" not in said, said


def test_shard_names_alone_are_not_taken_for_fsdp_shards(tmp_path: Path) -> None:
    """`-shardN.pt` names whose contents hold weights by name (or flat parameters without the metadata) are not
    said to be FSDP shards: the folder is refused as any folder of several weight files is."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for rank in range(2):
        torch.save({"model": {f"layer{rank}.weight": torch.zeros(4, 4)}}, plain / f"checkpoint_last-shard{rank}.pt")
    flat_only = tmp_path / "flat-only"
    flat_only.mkdir()
    for rank in range(2):
        torch.save({"model": {"flat_param_0": torch.zeros(64)}}, flat_only / f"checkpoint_last-shard{rank}.pt")
    for folder in (plain, flat_only):
        result = run_cli("inspect", str(folder))
        assert result.exit_code == 2
        said = " ".join(result.stderr.split())
        assert "FSDP shards" not in said and "several weight files" in said, said


# --- one shard read alone --------------------------------------------------------------------------------------------


def test_one_metaseq_shard_alone_warns_with_its_metadata(tmp_path: Path) -> None:
    """Before: inspect's warning named only fairseq's 'fsdp_metadata', which metaseq's file does not hold."""
    folder = tmp_path / "run"
    whole = _save_fsdp_shards(folder, world=2)
    code, report = run_json("inspect", str(folder / "checkpoint_last-shard1.pt"))
    assert code == 0, report
    said = [w for w in report["warnings"] if "flat param" in w]
    assert len(said) == 1, report["warnings"]
    warning = said[0]
    assert warning.startswith("checkpoint_last-shard1.pt is FSDP shard 1 of one metaseq model (--ddp-backend "
                              "fully_sharded --use-sharded-state with no model parallelism; one of 2 shards in its "
                              "folder, checkpoint_last-shard0.pt to checkpoint_last-shard1.pt)"), warning
    assert f"the model holds {_params(whole):,} parameters" in warning, warning
    assert "consolidate_fsdp_shards" in warning and "fsdp_metadata" not in warning, warning


def test_a_lone_shard_says_the_others_are_needed(tmp_path: Path) -> None:
    """With no sibling beside it, no consolidation command is given with a shard count made up."""
    _save_fsdp_shards(tmp_path, world=2, skip=(1,))
    code, report = run_json("inspect", str(tmp_path / "checkpoint_last-shard0.pt"))
    assert code == 0, report
    warning = next(w for w in report["warnings"] if "flat param" in w)
    assert "no other shard beside it" in warning and "fetch the others (checkpoint_last-shard1.pt, ...)" in warning
    assert "python -m" not in warning and "num_shards" not in warning, warning


def test_one_shard_named_otherwise_warns_by_the_metadata_it_holds(tmp_path: Path) -> None:
    """A metaseq shard renamed (rank0.pt): inspect's generic warning of fairscale flat parameters names the
    shard_metadata the file holds and metaseq's script, not fairseq's fsdp_metadata."""
    _save_fsdp_shards(tmp_path, world=2)
    renamed = tmp_path / "rank0.pt"
    (tmp_path / "checkpoint_last-shard0.pt").rename(renamed)
    code, report = run_json("inspect", str(renamed))
    assert code == 0, report
    warning = next(w for w in report["warnings"] if "fairscale FSDP flat parameter" in w)
    assert "shard_metadata=[each file's 'shard_metadata']" in warning and "consolidate_fsdp_shards" in warning
    assert "fsdp_metadata" not in warning, warning


# --- diff-keys ---------------------------------------------------------------------------------------------------


def test_diff_keys_names_the_metadata_a_metaseq_shard_holds(tmp_path: Path) -> None:
    """Before: the note said to unflatten with each file's 'fsdp_metadata', which metaseq's files do not hold."""
    folder = tmp_path / "run"
    whole = _save_fsdp_shards(folder, world=2)
    merged = tmp_path / "checkpoint_consolidated.pt"
    torch.save({"model": whole}, merged)
    code, report = run_json("diff-keys", str(folder / "checkpoint_last-shard0.pt"), str(merged))
    assert code == 1, report
    assert {row["reason"] for row in report["unexpected"]} == {"fairscale-flat-param"}, report["unexpected"]
    note = next(note for note in report["notes"] if "fairscale FSDP flat parameter" in note)
    assert "A holds the metadata that unflattens them under 'shard_metadata'" in note, note
    assert "metaseq.scripts.consolidate_fsdp_shards" in note, note
    assert "shard_metadata=[each file's 'shard_metadata']" in note and "fsdp_metadata" not in note, note
    result = run_cli("diff-keys", str(folder / "checkpoint_last-shard0.pt"), str(merged))
    assert "consolidate_fsdp_shards" in _said(result.stdout), result.stdout


def test_diff_keys_says_when_no_metadata_is_beside_the_flat_parameters(tmp_path: Path) -> None:
    """A local_state_dict saved alone: no consolidate_shard_weights call can take metadata the file lacks."""
    folder = tmp_path / "run"
    whole = _save_fsdp_shards(folder, world=2)
    bare = tmp_path / "local.pt"
    torch.save({"model": torch.load(folder / "checkpoint_last-shard0.pt", weights_only=False)["model"]}, bare)
    merged = tmp_path / "checkpoint_consolidated.pt"
    torch.save({"model": whole}, merged)
    code, report = run_json("diff-keys", str(bare), str(merged))
    assert code == 1, report
    note = next(note for note in report["notes"] if "fairscale FSDP flat parameter" in note)
    assert "A's file holds none, neither metaseq's 'shard_metadata' nor fairseq's 'fsdp_metadata'" in note, note
    assert "consolidate_shard_weights" not in note, note


# --- the parameters of a flat part, by its shard_metadata ------------------------------------------------------


def test_flat_parts_say_the_merged_models_parameters_by_their_metadata(tmp_path: Path) -> None:
    """Before: a folder of reshard-model_part-R.pt said only its flat values (padded, one part's)."""
    folder = tmp_path / "opt"
    whole = _save_metaseq_reshard(folder, parts=2)
    part0 = torch.load(folder / "reshard-model_part-0.pt", weights_only=False)
    part_params = sum(torch.Size(shape).numel() for group in part0["shard_metadata"]["param_metadata"]
                      for info in group["params"].values() for shape in info["shapes"]) + sum(
        t.numel() for name, t in part0["model"].items() if "flat_param" not in name)
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert (f"unflattened by its shard_metadata's shapes, a part holds {part_params:,} parameters and the model "
            f"merged {_params(whole):,}") in said, said
    # One part read alone: the part's and the merged model's.
    code, report = run_json("inspect", str(folder / "reshard-model_part-1.pt"))
    assert code == 0, report
    warning = next(w for w in report["warnings"] if "reshard-model_part-1.pt is part 1" in w)
    assert f"a part holds {part_params:,} parameters and the model merged {_params(whole):,}" in warning, warning


def test_flat_parts_without_metadata_say_no_count(tmp_path: Path) -> None:
    """reshard_mp.py's parts drop shard_metadata: no count is made up."""
    folder = tmp_path / "opt"
    _save_metaseq_reshard(folder, parts=2, metadata=False)
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert "unflattened by" not in said and "a part holds" not in said, said
    assert "They hold no shard_metadata" in said, said
