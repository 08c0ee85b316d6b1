"""Review of fixlist13, zipperf, ux11 and the lead's changes: answers that were false.

Covers: diff-keys' "input embedding filled from A's output embedding" (info) said where B's model keeps the two
apart (B stores both; A's config says untied), hiding an input embedding that starts at random; "one shard of
several" said of a whole model named `fold-1-of-5.pt`, and "give the folder" advised where the folder is refused
(no index) or holds that shard alone; mmcv EMAHook's ema_* rule applied to a model whose own learned `ema_scale`
sits beside `scale` (diff-keys said info, inspect "parameters stored twice"); convert leaving trainer_state.json
out of a final model's folder (save_model + save_state), which is no checkpoint to resume from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, run_json


def _missing(report: dict[str, object]) -> dict[str, dict[str, str]]:
    return {issue["name"]: issue for issue in report["missing"]}  # type: ignore[union-attr, index]


def _lm(tmp_path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"transformer.wte.weight": torch.randn(50, 16), "lm_head.weight": torch.randn(50, 16),
            "transformer.ln_f.weight": torch.randn(16)}


def test_an_input_embedding_b_keeps_apart_from_its_output_one_is_not_filled_from_it(tmp_path: Path) -> None:
    """B stores wte and lm_head as two tensors (untied: a tied pair is one tensor, or save_pretrained keeps one
    name); A lost wte. A's lm_head loads into B's lm_head, and wte starts at random: not 'filled from it'."""
    weights = _lm(tmp_path)
    save_file(weights, tmp_path / "b.safetensors")
    save_file({k: v for k, v in weights.items() if k != "transformer.wte.weight"}, tmp_path / "a.safetensors")
    code, report = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    wte = _missing(report)["transformer.wte.weight"]
    assert (wte["reason"], wte["severity"]) == ("unknown", "error"), wte
    assert code == 1 and report["worst_severity"] == "error"


def test_an_input_embedding_is_not_filled_from_an_output_one_a_config_calls_untied(tmp_path: Path) -> None:
    """A's config says tie_word_embeddings false and B's says nothing: A's lm_head is a head of its own."""
    weights = _lm(tmp_path)
    (tmp_path / "a").mkdir()
    save_file({k: v for k, v in weights.items() if k != "transformer.wte.weight"}, tmp_path / "a" / "model.safetensors")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"model_type": "gpt2", "tie_word_embeddings": False}))
    save_file({k: v for k, v in weights.items() if k != "lm_head.weight"}, tmp_path / "b.safetensors")
    _, report = run_json("diff-keys", str(tmp_path / "a"), str(tmp_path / "b.safetensors"))
    wte = _missing(report)["transformer.wte.weight"]
    assert (wte["reason"], wte["severity"]) == ("unknown", "error"), wte
    # Without A's word the pair is taken as tied, as before (a convert without config.json keeps lm_head).
    (tmp_path / "a" / "config.json").unlink()
    _, report = run_json("diff-keys", str(tmp_path / "a"), str(tmp_path / "b.safetensors"))
    wte = _missing(report)["transformer.wte.weight"]
    assert (wte["reason"], wte["severity"]) == ("tied-weight", "info"), wte


def test_a_whole_model_named_one_of_several_is_not_said_to_be_a_shard(tmp_path: Path) -> None:
    """`fold-1-of-5.pt` (a 5-fold cross-validation's first model) is whole: no 'shard 1 of 5' warning."""
    for fold in (1, 2):
        torch.save({"w": torch.randn(3, 3), "b": torch.randn(3)}, tmp_path / f"fold-{fold}-of-5.pt")
    code, report = run_json("inspect", str(tmp_path / "fold-1-of-5.pt"))
    assert code == 0
    assert not [w for w in report["warnings"] if "shard" in w], report["warnings"]


def test_a_shard_without_its_index_is_not_told_to_give_a_folder_that_is_refused(tmp_path: Path) -> None:
    """Shards beside each other without their index: the folder is refused (from_pretrained needs the index), so
    'give the folder to read them all' sent the user to an error; a shard alone has no others to read."""
    (tmp_path / "sh").mkdir()
    save_file({"a": torch.randn(3)}, tmp_path / "sh" / "model-00001-of-00002.safetensors")
    save_file({"b": torch.randn(3)}, tmp_path / "sh" / "model-00002-of-00002.safetensors")
    code, _ = run_json("inspect", str(tmp_path / "sh"))
    assert code == 2  # what the advice sent the user to
    code, report = run_json("inspect", str(tmp_path / "sh" / "model-00001-of-00002.safetensors"))
    assert code == 0
    said = [w for w in report["warnings"] if "is shard 1 of 2" in w]
    assert said and "give the folder" not in said[0], report["warnings"]
    assert "not their index model.safetensors.index.json" in said[0], said

    (tmp_path / "lone").mkdir()
    shutil.copy(tmp_path / "sh" / "model-00001-of-00002.safetensors", tmp_path / "lone")
    _, report = run_json("inspect", str(tmp_path / "lone" / "model-00001-of-00002.safetensors"))
    said = [w for w in report["warnings"] if "is shard 1 of 2" in w]
    assert said and said[0].endswith("the other shards are not beside it"), report["warnings"]


def test_a_learned_ema_parameter_beside_its_namesake_is_no_mmcv_ema_buffer(tmp_path: Path) -> None:
    """`ema_scale` beside `scale` in a model with other weights and no other ema_* copy: a parameter of the model,
    not EMAHook's (which copies every parameter). Missing from A, it does not load: not 'info'."""
    torch.manual_seed(0)
    b = {"layer.weight": torch.randn(4, 4), "layer.bias": torch.randn(4), "scale": torch.randn(4),
         "ema_scale": torch.randn(4)}
    torch.save(b, tmp_path / "b.pt")
    torch.save({k: v for k, v in b.items() if k != "ema_scale"}, tmp_path / "a.pt")
    code, report = run_json("diff-keys", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"))
    ema = _missing(report)["ema_scale"]
    assert (ema["reason"], ema["severity"]) == ("unknown", "error"), ema
    assert code == 1
    _, inspected = run_json("inspect", str(tmp_path / "b.pt"))
    assert not [w for w in inspected["warnings"] if "EMAHook" in w], inspected["warnings"]


@pytest.mark.parametrize("resumable", [False, True])
def test_trainer_state_stays_with_a_final_model_and_leaves_a_checkpoint(tmp_path: Path, resumable: bool) -> None:
    """trainer.save_model() + trainer.save_state() write training_args.bin and trainer_state.json beside a final
    model: no optimizer, nothing to resume, and the log history is the folder's own record; it was left out all the
    same. Beside an optimizer (a checkpoint to resume) it is still left out."""
    folder = tmp_path / "final"
    shutil.copytree(REPO_ROOT / "fixtures" / "example", folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 500, "log_history": [{"loss": 1.0}]}))
    torch.save({"output_dir": "final"}, folder / "training_args.bin")
    if resumable:
        torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "out"), "--dtype", "fp16")
    assert code == 0, data
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert ("trainer_state.json" in written) is not resumable, written
    assert "training_args.bin" not in written
    left_out = " ".join(data["plan"]["warnings"])
    assert ("trainer_state.json (Trainer's progress" in left_out) is resumable, left_out


@pytest.mark.parametrize("page", ["https://huggingface.co/acme/tiny/tree/mian",
                                  "https://huggingface.co/acme/tiny/blob/mian/model.safetensors"])
def test_a_mistyped_revision_in_a_web_page_address_is_corrected_in_the_address(
        tmp_path: Path, page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`/tree/mian` suggested `--revision main`, which beside the page's own revision is refused ('give one'): as
    for `hf://org/name@mian`, the ref meant goes into the address, and that address reads."""
    from tests.helpers import run_cli
    from tests.test_fixlist13 import _cache_repo

    _cache_repo(tmp_path, ["main"])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refused = run_cli("inspect", page)
    assert refused.exit_code == 2
    meant = page.replace("/mian", "/main")
    assert f"did you mean {meant} (cached)?" in refused.stderr, refused.stderr
    assert "--revision main" not in refused.stderr, refused.stderr
    code, report = run_json("inspect", meant)
    assert code == 0 and report["num_tensors"] == 1, report


def test_a_sharded_lightning_checkpoint_read_as_dot_is_named_in_the_consolidate_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`inspect .` inside Lightning's sharded `epoch=0 step=10.ckpt/`: `.` has no name to add `.consolidated` to,
    and the message ended in "unexpected ValueError"; the command it gives now names the folder from beside it."""
    import shlex
    import warnings

    import torch.distributed.checkpoint as dcp

    from tests.helpers import run_cli

    folder = tmp_path / "epoch=0 step=10.ckpt"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {"l1.weight": torch.randn(4, 2)}}, checkpoint_id=str(folder), no_dist=True)
    torch.save({"epoch": 0, "global_step": 10, "pytorch-lightning_version": "2.4.0", "loops": {}}, folder / "meta.pt")
    monkeypatch.chdir(folder)
    result = run_cli("inspect", ".")
    assert result.exit_code == 2
    assert "unexpected" not in result.stderr, result.stderr
    named = shlex.quote("../epoch=0 step=10.ckpt")
    assert (f"consolidate_checkpoint {named} writes them as one {shlex.quote('../epoch=0 step=10.ckpt.consolidated')}"
            in result.stderr), result.stderr
