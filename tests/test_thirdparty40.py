"""Thirdparty40: folders of shards that mix two checkpoints (an old `-of-00002` set beside a new `-of-00003` one, a
stray pytorch_model.bin beside safetensors shards), with or without an index, and a set missing shards without its
index: which set is read and why, the other said to be ignored, never merged; the missing shards named.

The sets are written as transformers' save_pretrained writes them (huggingface_hub's split into
`model-0000i-of-0000N.safetensors` and its model.safetensors.index.json), of the fixtures' tiny seeded BERT.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fixtures.build import build_bert
from tests.helpers import folder_refusals, run_cli, run_json


def _said(text: str) -> str:
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


def _save_shards(folder: Path, max_shard_size: str, index: bool = True) -> list[str]:
    """save_pretrained's safetensors shards of the tiny BERT at `max_shard_size`, with or without the index; their
    names, in order."""
    model = build_bert()
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    shards = sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1, shards
    if not index:
        (folder / "model.safetensors.index.json").unlink()
    return shards


def _two_sets(folder: Path, index: str | None) -> tuple[list[str], list[str]]:
    """An old set of fewer shards beside a new set of more, both of the same model; `index`: 'new', 'old' or None,
    which set's index is kept."""
    old_folder, new_folder = folder.parent / f"{folder.name}-old", folder.parent / f"{folder.name}-new"
    old = _save_shards(old_folder, "60KB")
    new = _save_shards(new_folder, "40KB")
    assert len(old) < len(new) and old[0].rsplit("-of-", 1)[1] != new[0].rsplit("-of-", 1)[1]
    folder.mkdir()
    for source in (old_folder, new_folder):
        for shard in source.glob("model-*.safetensors"):
            shard.rename(folder / shard.name)
    (new_folder / "config.json").rename(folder / "config.json")
    if index is not None:
        (old_folder if index == "old" else new_folder).joinpath("model.safetensors.index.json").rename(
            folder / "model.safetensors.index.json")
    return old, new


def test_an_index_beside_another_sets_shards_reads_its_own_and_names_the_others(tmp_path: Path) -> None:
    old, new = _two_sets(tmp_path / "m", index="new")
    result = run_cli("inspect", str(tmp_path / "m"))
    assert result.exit_code == 0, result.stderr
    said = _said(result.stderr)
    pattern = "model-*-of-" + old[0].rsplit("-of-", 1)[1]
    assert f"{pattern} ignored: the {len(old)} shards of another checkpoint, which the index read does not name" in said
    assert f"model.safetensors.index.json is read, with the {len(new)} shards it names" in said
    assert "never merged" in said
    assert f"{len(new)} weight files" in _said(result.stdout)  # the index's set alone
    # The same set, whichever set the index names: the old one's index reads the old set.
    _two_sets(tmp_path / "o", index="old")
    code, report = run_json("inspect", str(tmp_path / "o"))
    assert code == 0
    assert sorted(f["path"] for f in report["files"] if f["path"].endswith(".safetensors")) == old
    assert any(f"model-*-of-{new[0].rsplit('-of-', 1)[1]} ignored" in w for w in report["warnings"])


def test_two_sets_without_an_index_are_refused_naming_both(tmp_path: Path) -> None:
    old, new = _two_sets(tmp_path / "m", index=None)
    for line in folder_refusals(tmp_path / "m"):
        assert "the shards of 2 different checkpoints and no index" in line, line
        assert f"model-*-of-{new[0].rsplit('-of-', 1)[1]} ({len(new)} of {len(new)} shards)" in line
        assert f"model-*-of-{old[0].rsplit('-of-', 1)[1]} ({len(old)} of {len(old)} shards)" in line
        assert "not merged" in line and "name one shard to read it alone" in line


def test_a_stray_pytorch_model_bin_beside_shards_without_index_says_which_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shards = _save_shards(folder, "40KB", index=False)
    torch.save({k: v.clone() for k, v in build_bert(seed=7).state_dict().items()}, folder / "pytorch_model.bin")
    for command in (("inspect", str(folder)), ("check-dtype", str(folder))):
        result = run_cli(*command)
        assert result.exit_code == 0, result.stderr
        said = _said(result.stderr)
        assert (f"model-*-of-{shards[0].rsplit('-of-', 1)[1]} ignored: the {len(shards)} shards of another "
                "checkpoint, without their index model.safetensors.index.json") in said, said
        assert "pytorch_model.bin is read (as from_pretrained(folder) chooses), and the two are never merged" in said
        # Not also listed as names from_pretrained does not look for.
        assert "does not look for" not in said


def test_a_stray_pytorch_model_bin_beside_an_indexed_set_is_said_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shards = _save_shards(folder, "40KB")
    torch.save(build_bert(seed=7).state_dict(), folder / "pytorch_model.bin")
    code, report = run_json("inspect", str(folder))
    assert code == 0
    assert sorted(f["path"] for f in report["files"] if f["path"].endswith(".safetensors")) == shards
    assert "pytorch_model.bin is ignored: model.safetensors.index.json comes first, as from_pretrained chooses" \
        in report["warnings"]


def test_a_shard_missing_in_the_middle_without_an_index_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shards = _save_shards(folder, "20KB", index=False)
    assert len(shards) >= 4
    (folder / shards[1]).unlink()
    for line in folder_refusals(folder):
        assert (f"folder holds {len(shards) - 1} of the {len(shards)} shards of one checkpoint "
                f"({shards[0]} to {shards[-1]}) and no index: 1 is missing ({shards[1]})") in line, line
        assert "fetch it and the index (model.safetensors.index.json)" in line
    (folder / shards[-1]).unlink()
    for command in (("diff-keys", str(folder), str(folder)), ("convert", str(folder), "-o", str(tmp_path / "o.st")),
                    ("shard", str(folder), "-o", str(tmp_path / "s"), "--max", "1MB"), ("check-dtype", str(folder))):
        result = run_cli(*command)
        assert result.exit_code == 2, (command, result.stdout)
        assert f"2 are missing ({shards[1]}, {shards[-1]})" in _said(result.stderr), (command, result.stderr)
    assert not (tmp_path / "o.st").exists() and not (tmp_path / "s").exists()


def test_a_complete_set_without_its_index_is_still_refused_as_before(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shards = _save_shards(folder, "40KB", index=False)
    for line in folder_refusals(folder):
        assert (f"folder holds the {len(shards)} shards of one checkpoint ({shards[0]} to {shards[-1]}) but not their "
                "index (model.safetensors.index.json") in line, line


def test_the_shards_of_an_unread_index_are_left_to_that_index(tmp_path: Path) -> None:
    """pytorch_model.bin.index.json's shards beside model.safetensors.index.json's: said once, with their index."""
    folder = tmp_path / "m"
    _save_shards(folder, "40KB")
    from fixtures.build import save_bin_folder

    save_bin_folder(build_bert(), folder, max_shard_size="40KB")
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    code, report = run_json("inspect", str(folder))
    assert code == 0
    assert not any("another checkpoint" in w for w in report["warnings"]), report["warnings"]
    assert any(w.startswith("pytorch_model.bin.index.json is ignored") for w in report["warnings"])
