"""review77: faults found reviewing the convert/shard --dry-run refusal (would_refuse) and the writes it foresees.

1. An output under a file (`-o notes.txt/out`): the write refuses it (exit 2, "a part of the output's path is a
   file, not a folder"), but `shard --dry-run` said the write would go ahead (exit 0), and `convert --dry-run` said
   "the output folder does not exist (create it first: mkdir -p notes.txt)", advice that fails when pasted.
2. `shard ../src -o .` (run in an empty sibling folder): refused as "output would overwrite the input" because the
   input's path was made absolute without normalising `..` (`/run/../src/model.safetensors`), whose lexical
   parents hold the output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli
from tests.test_dry_run_refusal import as_written, dry_then_real


def _source(folder: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(77)
    tensors = {"encoder.weight": torch.randn(16, 16), "encoder.bias": torch.randn(16),
               "head.weight": torch.randn(4, 16)}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "model.safetensors")
    return tensors


def _dry_then_real(*args: str) -> tuple[str, str]:
    """The dry run's would_refuse (the dry run must exit 1), then the real write's one error line (exit 2)."""
    report, line = dry_then_real(*args)
    return report["would_refuse"], as_written(line)


@pytest.mark.parametrize("under", ["out", "deeper/out"])
def test_shard_under_a_file_is_foreseen_as_the_write_refuses_it(tmp_path: Path, under: str) -> None:
    _source(tmp_path / "src")
    (tmp_path / "notes.txt").write_text("not a folder")
    out = tmp_path / "notes.txt" / under
    foreseen, written = _dry_then_real("shard", str(tmp_path / "src"), "--max", "300B", "-o", str(out))
    assert foreseen == written
    assert foreseen == f"{out}: cannot write the output: a part of the output's path is a file, not a folder"
    assert (tmp_path / "notes.txt").read_text() == "not a folder"


def test_convert_under_a_file_is_not_said_to_be_a_missing_folder(tmp_path: Path) -> None:
    _source(tmp_path / "src")
    (tmp_path / "notes.txt").write_text("not a folder")
    out = tmp_path / "notes.txt" / "model.safetensors"
    foreseen, written = _dry_then_real("convert", str(tmp_path / "src" / "model.safetensors"), "-o", str(out))
    assert foreseen == written
    assert "is a file, not a folder" in foreseen and "mkdir -p" not in foreseen


def test_a_missing_folder_of_a_file_output_is_still_foreseen_as_missing(tmp_path: Path) -> None:
    _source(tmp_path / "src")
    out = tmp_path / "nowhere" / "model.safetensors"
    foreseen, written = _dry_then_real("convert", str(tmp_path / "src" / "model.safetensors"), "-o", str(out))
    assert foreseen == written and "the output folder does not exist (create it first: mkdir -p " in foreseen


def test_shard_a_sibling_folder_into_the_current_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tensors = _source(tmp_path / "src")
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    dry = run_cli("shard", "../src", "--max", "300B", "-o", ".", "--force", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert json.loads(dry.stdout)["would_refuse"] is None
    real = run_cli("shard", "../src", "--max", "300B", "-o", ".", "--force")
    assert real.exit_code == 0, real.stderr
    index = json.loads((tmp_path / "run" / "model.safetensors.index.json").read_text())
    written: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        written.update(load_file(tmp_path / "run" / shard))
    assert written.keys() == tensors.keys()
    assert all(torch.equal(written[name], tensors[name]) for name in tensors)
    assert torch.equal(load_file(tmp_path / "src" / "model.safetensors")["head.weight"], tensors["head.weight"])


def test_the_input_folder_itself_is_still_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _source(tmp_path / "src")
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    for output in ("../src", ".."):
        result = run_cli("shard", "../src", "--max", "300B", "-o", output, "--force", "--dry-run")
        assert result.exit_code == 2
        assert result.stderr.strip() in (f"error: {output}: output would overwrite the input; choose another path",
                                         f"error: {output}: output is the input folder; choose another path")


def test_unwrapped_state_dict_warning_does_not_say_the_old_loader_still_works(tmp_path: Path) -> None:
    """3. `{"model": state_dict}` converted: the warning said "a loader that reads checkpoint['model'] reads the
    output's names directly", which reads as if that loader still worked; on the output it raises KeyError."""
    torch.manual_seed(77)
    weights = {"encoder.weight": torch.randn(4, 4), "encoder.bias": torch.randn(4)}
    torch.save({"model": weights}, tmp_path / "wrapped.pt")
    out = tmp_path / "flat.bin"
    result = run_cli("convert", str(tmp_path / "wrapped.pt"), "--to", "bin", "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    written = torch.load(out, weights_only=True)
    assert "model" not in written and written.keys() == weights.keys()  # checkpoint['model'] raises KeyError
    warning = json.loads(result.stdout)["warnings"][0]
    assert "the output has no 'model' key" in warning
    assert "a loader that reads checkpoint['model'] must read the output's names directly" in warning
    assert "reads checkpoint['model'] reads" not in warning


@pytest.mark.parametrize("command", ["convert", "shard"])
@pytest.mark.parametrize("kind", ["meta", "expanded"])
def test_a_tensor_with_no_values_is_refused_by_the_dry_run_as_by_the_write(tmp_path: Path, command: str,
                                                                           kind: str) -> None:
    """4. A .pt holding a meta tensor, or a view far larger than its storage: the write refuses it as bad input
    (exit 2) before anything is written, but --dry-run said "would convert" (exit 0, `would_refuse` null)."""
    base = torch.zeros(4)
    values = torch.empty(4, 4, device="meta") if kind == "meta" else base.as_strided((50_000, 50_000), (0, 0))
    torch.save({"a.weight": values, "b.weight": torch.ones(2)}, tmp_path / "m.pt")
    out = ["-o", str(tmp_path / "out.safetensors")] if command == "convert" else ["--max", "1KB", "-o",
                                                                                   str(tmp_path / "shards")]
    dry = run_cli(command, str(tmp_path / "m.pt"), *out, "--dry-run")
    real = run_cli(command, str(tmp_path / "m.pt"), *out)
    assert real.exit_code == 2 and dry.exit_code == 2, (dry.stdout, dry.stderr)
    assert dry.stdout == "" and dry.stderr == real.stderr
    assert "'a.weight'" in dry.stderr and ("meta device" if kind == "meta" else "over a storage of 16") in dry.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_the_no_values_check_costs_no_header_lookup_per_safetensors_tensor(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """5. The check of 4 runs for every tensor of the dry run (as of the write): over a 10,000-key safetensors file
    it looked each tensor's file header up (0.25 s of a 1.4 s `shard --dry-run`), for tensors it never refuses."""
    from weightdoctor.checkpoint import Checkpoint, open_checkpoint
    from weightdoctor.errors import CorruptCheckpoint
    from weightdoctor.rewrite import refuse_unreadable_tensors
    from weightdoctor.shard import plan_shard

    torch.manual_seed(77)
    save_file({f"layers.{i}.weight": torch.randn(2) for i in range(2000)}, tmp_path / "model.safetensors")
    torch.save({"meta.weight": torch.empty(2, 2, device="meta")}, tmp_path / "meta.pt")
    lookups: list[str] = []
    original = Checkpoint.safetensors_header

    def counted_lookup(self: Checkpoint, relpath: str) -> object:
        lookups.append(relpath)
        return original(self, relpath)

    with open_checkpoint(tmp_path / "model.safetensors") as checkpoint:
        plan = plan_shard(checkpoint, tmp_path / "out", max_size="10KB", fmt="safetensors", dtype=None,
                          keep_fp32=False, renames=[], metadata={}, key=None)
        assert plan._selection is not None and len(plan._selection.tensors) == 2000
        monkeypatch.setattr(Checkpoint, "safetensors_header", counted_lookup)
        refuse_unreadable_tensors(checkpoint, plan._selection)
        assert lookups == []
    with open_checkpoint(tmp_path / "meta.pt") as checkpoint:  # a pickle's tensors are still checked
        plan = plan_shard(checkpoint, tmp_path / "out", max_size="10KB", fmt="safetensors", dtype=None,
                          keep_fp32=False, renames=[], metadata={}, key=None)
        assert plan._selection is not None
        with pytest.raises(CorruptCheckpoint, match="on the meta device"):
            refuse_unreadable_tensors(checkpoint, plan._selection)


def test_force_onto_an_immutable_file_is_refused_before_writing_and_by_the_dry_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """6. `convert --force` onto an immutable file: `--dry-run` said the write would go ahead (exit 0); the write
    wrote the whole output beside it, then failed its rename (exit 2). A folder's blocker was already said first.
    The inode flag is faked (chattr +i needs CAP_LINUX_IMMUTABLE), as test_fixlist9 does."""
    from weightdoctor.writers import atomic

    tensors = _source(tmp_path / "src")
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"an earlier output")
    monkeypatch.setattr(atomic, "_inode_flags", lambda path: 0x10 if Path(path) == target else 0)
    renames: list[object] = []
    original_replace = atomic.os.replace

    def recorded_replace(src: object, dst: object) -> None:
        renames.append(dst)
        original_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", recorded_replace)
    args = ("convert", str(tmp_path / "src" / "model.safetensors"), "-o", str(target), "--dtype", "fp16", "--force")
    foreseen, written = _dry_then_real(*args)
    assert foreseen == written == (f"{target}: cannot replace the existing output: {target} is immutable "
                                   "(chattr +i): it cannot be renamed or deleted; it was left as it is")
    assert renames == [] and target.read_bytes() == b"an earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors", "src"]  # no temp file left
    # Not immutable: the same --force replaces it.
    monkeypatch.setattr(atomic, "_inode_flags", lambda path: 0)
    assert run_cli(*args).exit_code == 0 and renames == [target]
    assert torch.equal(load_file(target)["head.weight"], tensors["head.weight"].half())


@pytest.mark.parametrize("under", ["out", "deeper/out"])
def test_shard_under_a_link_to_nothing_is_foreseen_as_the_write_refuses_it(tmp_path: Path, under: str) -> None:
    """7. A folder output under a link to nothing: the write stops there (exit 2), the dry run walked past it to
    the folder that exists and said the write would go ahead (exit 0)."""
    _source(tmp_path / "src")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    out = tmp_path / "gone" / under
    foreseen, written = _dry_then_real("shard", str(tmp_path / "src"), "--max", "300B", "-o", str(out))
    assert foreseen == written
    # (review78: it said "a part of the output's path is a file, not a folder", of a link; it names the link.)
    make = tmp_path / "nowhere" / Path(under).parent if Path(under).parent != Path(".") else tmp_path / "nowhere"
    assert foreseen == (f"{out}: cannot write the output: the output folder is under {tmp_path / 'gone'}, a link to "
                        f"{tmp_path / 'nowhere'}, which does not exist (create it first: mkdir -p {make})")
    assert not (tmp_path / "nowhere").exists()
