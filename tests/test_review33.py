"""Review 33: the merges of fixlist19 and thirdparty17 (bounded subfolder listing, the wrapper-prefix warning, the
verdict said of a file with no weights)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.helpers import run_cli


def _one_error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and result.stdout == "" and len(lines) == 1, (result.stdout, result.stderr)
    return " ".join(lines[0].split())


def test_a_trainer_output_dir_of_1500_saves_still_names_its_latest(tmp_path: Path) -> None:
    """A Trainer output_dir saved every 500 steps 1,500 times (checkpoint-500 ... checkpoint-750000): the subfolder
    bound looked into the first 1,000 names in string order, where checkpoint-750000 sorts late, and the refusal
    pointed at checkpoint-549500 as "the highest-numbered, the run's latest save"."""
    run = tmp_path / "output_dir"
    run.mkdir()
    (run / "config.json").write_text('{"model_type": "llama"}')
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    for index in range(1, 1501):
        save = run / f"checkpoint-{500 * index}"
        save.mkdir()
        os.link(weights, save / "model.safetensors")
    line = _one_error_line(run_cli("inspect", str(run)))
    assert line.endswith(f"point at one, e.g. {run / 'checkpoint-750000'} (the highest-numbered, the run's latest "
                         "save)"), line


def _verdict_and_torch(path: Path) -> tuple[str, str]:
    """The refusal's last clause and what the advice it prints does when run."""
    import warnings

    line = _one_error_line(run_cli("inspect", str(path)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(path, weights_only=True)
        ran = "reads"
    except Exception as exc:  # what torch says is the point of the check
        ran = f"refuses: {type(exc).__name__}"
    return line, ran


def test_the_verdict_of_a_protocol_4_file_with_no_weights_does_not_say_torch_reads_it(tmp_path: Path) -> None:
    """torch.save(tensor, path, pickle_protocol=4): a safe file, but torch's weights_only loader stops at protocol
    4's FRAME opcode; the refusal said "torch.load(path, weights_only=True) reads it", and running that failed."""
    path = tmp_path / "mel_stats.pth"
    torch.save(torch.arange(80.0), path, pickle_protocol=4)
    line, ran = _verdict_and_torch(path)
    assert ran.startswith("refuses"), ran
    assert "weights_only=True) reads it" not in line, line
    assert line.endswith("its pickle is safe (static scan: 3 globals torch's weights_only loader allows), but "
                         f"torch.load({str(path)!r}, weights_only=True) refuses it for its pickle protocol 4 (torch's "
                         "restricted loader reads protocol 2's opcodes)"), line

    default = tmp_path / "default.pth"  # protocol 2, as torch.save writes: the advice holds and is kept
    torch.save(torch.arange(80.0), default)
    line, ran = _verdict_and_torch(default)
    assert ran == "reads" and line.endswith(f": torch.load({str(default)!r}, weights_only=True) reads it"), (ran, line)


def test_the_verdict_of_a_numpy_array_file_names_what_torch_needs_allowed(tmp_path: Path) -> None:
    """torch.save(numpy array): its numpy globals were counted as "globals torch's weights_only loader allows" and
    the line said torch.load(path, weights_only=True) reads it; torch refuses numpy._core.multiarray._reconstruct
    unless it is allowed with torch.serialization.safe_globals."""
    import numpy

    path = tmp_path / "stats.pth"
    torch.save(numpy.zeros(3, dtype=numpy.float32), path)
    line, ran = _verdict_and_torch(path)
    assert ran.startswith("refuses"), ran
    assert "weights_only=True) reads it" not in line and "globals torch's weights_only loader allows" not in line, line
    assert f"but torch.load({str(path)!r}, weights_only=True) refuses it for numpy's globals (" in line, line
    assert "3 numpy globals (numpy._core.multiarray._reconstruct, numpy.dtype, numpy.ndarray)" in line, line
    assert line.endswith("(unless torch.serialization.safe_globals allows them)"), line


def test_a_ddp_wrapped_compiled_model_is_told_to_strip_both_prefixes(tmp_path: Path) -> None:
    """DDP(torch.compile(model)).state_dict() names every tensor `module._orig_mod.*` (nanoGPT-style training
    scripts compile, then wrap): the warning said to strip `module.` alone, and with that rename the bare model's
    load_state_dict still matched none of the names."""
    path = tmp_path / "ckpt.pt"
    torch.save({f"module._orig_mod.{name}": torch.ones(2) for name in ("fc.weight", "fc.bias")}, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert ("every tensor name starts with module._orig_mod. (the state_dict() of a DistributedDataParallel or "
            "DataParallel wrapper around a torch.compile one, where model.module._orig_mod.state_dict() is the "
            "model's own)") in said, said
    assert "diff-keys --rename '^module\\._orig_mod\\.=' shows the result" in said, said

    single = tmp_path / "single.pt"  # one wrapper: said as before
    torch.save({"_orig_mod.fc.weight": torch.ones(2)}, single)
    said = " ".join(run_cli("inspect", str(single)).stderr.split())
    assert "every tensor name starts with _orig_mod. (the state_dict() of a torch.compile wrapper, where " \
           "model._orig_mod.state_dict() is the model's own)" in said, said


def test_the_examples_of_the_merged_functions_run_as_doctests() -> None:
    """fixlist19 made every docstring example run or +SKIP; thirdparty17, merged after it, added two that need a
    checkpoint on disk (wrapper_prefix_warning's GroundingDINO file, _scan_words' mel_stats.pth) and failed."""
    import doctest

    from weightdoctor import structure
    from weightdoctor.checkpoint import pytorch_format

    for module in (structure, pytorch_format):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
        assert result.failed == 0, (module.__name__, result)
