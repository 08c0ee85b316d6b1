"""Review87: the last session's metaseq / fairseq model parts, FSDP shards and diff-keys --values ranking, reviewed.

- A part's or shard's rank comes from its file name, and the sentence naming the absent ones listed every rank below
  the highest: `model_part-999999999999.pt` beside `model_part-0.pt` (or a `-shard999999999999.pt`) made inspect build
  a list of 10**12 names, minutes and GBs (killed at 20 s holding 1.4-3 GB). Now counted, the first four named.
- `split_layout` counted a name that part 0 lacks once per other part holding it ("3 not alike" of one name in
  parts 1-3), searching a list for each.
- The consolidate_fsdp_shards command printed for one shard of a model with no model parallelism
  (`checkpoint_1_1000-shard0.pt`) globbed `checkpoint_1_1000*shard*.pt`: checkpoint_1_10000's shards beside them
  too, unflattened with them. review69 fixed it for the model parts' shards alone.
- `_kinds`, which names the modules of a part's split and whole tensors, searched a list for each name: 40,000
  names of a module each took 111 s (0.26 s now).
- How fairscale flat parameters are unflattened was written twice, by inspect's warning (structure.py) and diff-keys'
  note, in two wordings that had drifted (the warning's metaseq fix left out that consolidate_fsdp_shards glues
  model-parallel parts): one function now, `model_parts.fairscale_unflatten_fix`.
- README's `layers_changed_most` row did not name the new `max_abs_diff` key docs/commands/diff-keys.md documents.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
import time
from glob import glob
from pathlib import Path

import torch

from tests.test_thirdparty37 import _save_parts
from tests.test_thirdparty39 import _save_fsdp_shards

ROOT = Path(__file__).resolve().parents[1]
FAR = 999_999_999_999  # a rank no run has: the message must count to it, never list up to it


def _inspect(target: Path) -> subprocess.CompletedProcess[str]:
    """`inspect TARGET` in a subprocess, killed after 60 s (a hang is a failure, not a stuck test run)."""
    return subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(target)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def _folded(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def _flat_shard(path: Path, key: str) -> None:
    """One fairscale FSDP rank's file as metaseq (`shard_metadata`) or fairseq (`fsdp_metadata`) saves it."""
    metadata = {"param_metadata": [{"fsdp_path": "", "params": {"flat_param_0": {
        "names": ["fc1.weight"], "shapes": [(2, 4)], "numels": [8], "padding": 0}}}], "buffer_names": []}
    torch.save({"model": {"flat_param_0": torch.zeros(8)}, key: metadata}, path)


def test_a_model_part_of_a_far_rank_is_counted_not_listed(tmp_path: Path) -> None:
    for rank in (0, FAR):
        torch.save({"model": {"decoder.fc1.weight": torch.zeros(8, 4)}}, tmp_path / f"model_part-{rank}.pt")
    folder = _inspect(tmp_path)
    assert folder.returncode == 2 and "Traceback" not in folder.stderr
    said = _folded(folder.stderr)
    assert f"The {FAR - 1:,} parts of ranks 1, 2, 3, 4, ... are not beside them" in said, said
    one = _inspect(tmp_path / "model_part-0.pt")
    assert one.returncode == 0, one.stderr
    assert f"The {FAR - 1:,} parts of ranks 1, 2, 3, 4, ... are not beside them" in _folded(one.stderr + one.stdout)


def test_fsdp_sharded_parts_of_a_far_shard_are_counted_not_listed(tmp_path: Path) -> None:
    for shard in (0, FAR):
        _flat_shard(tmp_path / f"c-model_part-0-shard{shard}.pt", "shard_metadata")
    folder = _inspect(tmp_path)
    assert folder.returncode == 2 and "Traceback" not in folder.stderr
    said = _folded(folder.stderr)
    assert (f"The {FAR - 1:,} shards c-model_part-0-shard1.pt, c-model_part-0-shard2.pt, c-model_part-0-shard3.pt, "
            "c-model_part-0-shard4.pt, ... are not beside them") in said, said
    one = _inspect(tmp_path / "c-model_part-0-shard0.pt")
    assert one.returncode == 0, one.stderr
    assert f"The {FAR - 1:,} shards c-model_part-0-shard1.pt" in _folded(one.stderr + one.stdout)


def test_fsdp_shards_with_no_model_parallelism_of_a_far_rank(tmp_path: Path) -> None:
    for shard in (0, 2, FAR):
        _flat_shard(tmp_path / f"checkpoint_last-shard{shard}.pt", "fsdp_metadata")
    folder = _inspect(tmp_path)
    assert folder.returncode == 2 and "Traceback" not in folder.stderr
    said = _folded(folder.stderr)
    # Shards 1 and 3 onwards: the shard held between them (2) is passed over.
    assert (f"The {FAR - 2:,} shards checkpoint_last-shard1.pt, checkpoint_last-shard3.pt, checkpoint_last-shard4.pt, "
            "checkpoint_last-shard5.pt, ... are not beside them") in said, said
    one = _inspect(tmp_path / "checkpoint_last-shard2.pt")
    assert one.returncode == 0, one.stderr
    assert f"The {FAR - 2:,} shards checkpoint_last-shard1.pt" in _folded(one.stderr + one.stdout)


def test_one_missing_rank_is_still_said_as_before(tmp_path: Path) -> None:
    _save_parts(tmp_path, parts=3)
    (tmp_path / "model_part-1.pt").unlink()
    said = _folded(_inspect(tmp_path).stderr)
    assert "The 1 part of rank 1 is not beside them, and no merge is whole without every part" in said, said


def test_a_name_several_compared_parts_hold_is_counted_once(tmp_path: Path) -> None:
    _save_parts(tmp_path, parts=4)
    for rank in (1, 2, 3):
        checkpoint = torch.load(tmp_path / f"model_part-{rank}.pt", weights_only=False)
        checkpoint["model"]["decoder.extra.weight"] = torch.zeros(4)
        torch.save(checkpoint, tmp_path / f"model_part-{rank}.pt")
    for target in (tmp_path, tmp_path / "model_part-0.pt"):
        said = _folded(_inspect(target).stderr)
        assert "1 not alike in every part compared (decoder.extra.weight)" in said, said


def test_split_layout_counts_each_differing_name_once() -> None:
    from weightdoctor.checkpoint.model_parts import split_layout

    first = {f"n{i}.fc1.weight": (4, 4) for i in range(3)}
    others = [{**first, "extra.weight": (2,), "more.weight": (3,)} for _ in range(5)]
    assert split_layout([first, *others], 6).differing == ("extra.weight", "more.weight")


def test_readme_names_every_key_of_layers_changed_most() -> None:
    from weightdoctor.diff_keys import LayerChange

    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `layers_changed_most` |"))
    documented = set(re.search(r"\{([^}]*)\}", row)[1].replace(" ", "").split(","))  # type: ignore[index]
    assert documented == {field.name for field in dataclasses.fields(LayerChange)}, row


def test_consolidate_command_of_one_shard_reads_only_its_saves_shards(tmp_path: Path) -> None:
    _save_fsdp_shards(tmp_path, stem="checkpoint_1_1000")
    _save_fsdp_shards(tmp_path, stem="checkpoint_1_10000")

    def read_by_command(shard: str) -> list[str]:
        result = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", "--json", str(tmp_path / shard)],
                                capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        warning = _folded(next(w for w in json.loads(result.stdout)["warnings"] if "FSDP shard" in w))
        match = re.search(r"python -m metaseq\.scripts\.consolidate_fsdp_shards ('[^']*')", warning)
        assert match is not None, warning
        return sorted(Path(p).name for p in glob(f"{shlex.split(match[1])[0]}*shard*.pt"))  # what the script reads

    assert read_by_command("checkpoint_1_1000-shard1.pt") == ["checkpoint_1_1000-shard0.pt",
                                                               "checkpoint_1_1000-shard1.pt"]
    assert read_by_command("checkpoint_1_10000-shard0.pt") == ["checkpoint_1_10000-shard0.pt",
                                                                "checkpoint_1_10000-shard1.pt"]


def test_the_modules_of_many_names_are_told_in_linear_time() -> None:
    from weightdoctor.checkpoint.model_parts import _kinds

    names = [f"decoder.layers.{i}.adapter_{i}" for i in range(20_000)]
    started = time.perf_counter()
    told = _kinds(names, 3)
    assert time.perf_counter() - started < 3, "quadratic: 20,000 names took 28 s before"
    assert told == "adapter_0, adapter_1, adapter_2, ..."
    # The first of each kind, in order; a split module's whole bias by its module and own name.
    assert _kinds(["a.fc1.weight", "a.fc1.bias", "b.fc1.weight", "a.out_proj.bias", "x.version"], 5,
                  frozenset({"out_proj"})) == "fc1, out_proj.bias, version"


def test_inspect_and_diff_keys_give_one_fix_for_flat_parameters(tmp_path: Path) -> None:
    from tests.helpers import run_cli, run_json
    from weightdoctor.checkpoint.model_parts import fairscale_unflatten_fix

    b = tmp_path / "whole.pt"
    torch.save({"model": {"fc1.weight": torch.zeros(2, 4)}}, b)
    for key in ("shard_metadata", "fsdp_metadata", None):
        a = tmp_path / f"rank0-{key}.pt"
        checkpoint: dict[str, object] = {"model": {"flat_param_0": torch.zeros(8)}}
        if key is not None:
            checkpoint[key] = {"param_metadata": [{"fsdp_path": "", "params": {"flat_param_0": {
                "names": ["fc1.weight"], "shapes": [(2, 4)], "numels": [8], "padding": 0}}}], "buffer_names": []}
        torch.save(checkpoint, a)
        fix = fairscale_unflatten_fix(key)
        code, report = run_json("inspect", str(a))
        assert code == 0 and any(fix in " ".join(w.split()) for w in report["warnings"]), report["warnings"]
        result = run_cli("diff-keys", str(a), str(b), "--json")
        notes = [" ".join(note.split()) for note in json.loads(result.stdout)["notes"]]
        assert any(fix in note for note in notes), notes
