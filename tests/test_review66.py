"""review66: a review of memory5 (32K-value batches, the view-span guard, `working_on`). Python's own MemoryError,
raised once a limit's room was spent (an import after a whole .bin's map was held), reached the user as "error: out
of memory: MemoryError", of no file and no limit; a --sample of a .bin's view spread over a larger storage was read
through the map of its span unguarded ("[Errno 12] Cannot allocate memory", of no tensor); and genuine .bin files of
views (fused qkv, tied embeddings, a transposed weight, stepped and column slices, a storage offset) read the same
under a generous data limit as under none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT, one_error_line, run_cli

MIB = 1 << 20


def _views_bin(path: Path) -> Path:
    """A .bin of views as checkpoints save them, seeded and small."""
    generator = torch.Generator().manual_seed(66)
    qkv = torch.randn(3 * 64, 32, generator=generator)
    embedding = torch.randn(100, 32, generator=generator)
    wide = torch.randn(64, 128, generator=generator)
    base = torch.randn(1024, generator=generator)
    torch.save({
        "q.weight": qkv[:64], "k.weight": qkv[64:128], "v.weight": qkv[128:],  # a fused qkv as three views
        "embed.weight": embedding, "lm_head.weight": embedding,  # tied
        "proj.weight": torch.randn(64, 32, generator=generator).t(),  # saved transposed
        "stepped.weight": wide[:, ::4],  # a slice with a stride
        "columns.weight": wide[:, 10:40],  # a slice of columns, its whole storage saved
        "offset.bias": base[300:364],  # a storage offset
    }, path)
    return path


def test_a_memory_error_names_the_source_and_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python refusing memory said "out of memory: MemoryError", of no file: the allocator's refusal beside it
    names the source and the limit that is set; this one now does too, and the tensor `working_on` tagged."""
    from weightdoctor.checkpoint import safetensors_format
    from weightdoctor.commands import _errors
    from weightdoctor.render import console

    said: list[str] = []
    monkeypatch.setattr(console, "error", said.append)
    monkeypatch.setattr(safetensors_format, "private_map_limits", lambda: ["this process's data limit, ulimit -d"])
    assert _errors.report_failure(MemoryError(), debug=False, where="t.bin") == 2
    assert said == ["t.bin: out of memory: MemoryError; this process's data limit, ulimit -d, is set"]

    tagged = MemoryError()
    tagged.weightdoctor_tensor = "tensor 'w' (4.10 kB, float32)"  # type: ignore[attr-defined]
    monkeypatch.setattr(safetensors_format, "private_map_limits", list)
    assert _errors.report_failure(tagged, debug=False, where="t.bin") == 2
    assert said[-1] == "t.bin: out of memory: MemoryError (for tensor 'w' (4.10 kB, float32))"


def test_check_dtype_says_of_which_file_memory_ran_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """check-dtype of a .bin, its tensors read, then Python refusing memory (seen under `ulimit -d` with its whole
    map held: the import of weightdoctor.rewrite in `memory_at`): one line that names the file, exit 2."""
    import weightdoctor.check_dtype as check_dtype

    path = _views_bin(tmp_path / "views.bin")

    def refused(*_: object, **__: object) -> int:
        raise MemoryError

    monkeypatch.setattr(check_dtype, "memory_at", refused)
    line = one_error_line(run_cli("check-dtype", path, "--json"))
    assert "views.bin: out of memory: MemoryError" in line, line


# A child that limits its data (RLIMIT_DATA) to `room` bytes past what it holds once torch and the commands are
# imported (the first argument; 0: no limit), and runs `weightdoctor` with the rest.
_LIMITED = """
import importlib, pkgutil, resource, sys
import torch, weightdoctor, weightdoctor.cli
for module in pkgutil.walk_packages(weightdoctor.__path__, "weightdoctor."):
    importlib.import_module(module.name)
import rich.console, rich.live, rich.progress, rich.table, safetensors.torch
from weightdoctor.entry import main
room = int(sys.argv[1])
if room:
    held = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))
    resource.setrlimit(resource.RLIMIT_DATA, (held + room, resource.RLIM_INFINITY))
sys.argv = ["weightdoctor"] + sys.argv[2:]
main()
"""


def _limited(room: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _LIMITED, str(room), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)


@pytest.mark.parametrize("command", [("check-dtype",), ("inspect", "--stats")])
def test_views_read_the_same_under_a_generous_data_limit(tmp_path: Path, command: tuple[str, ...]) -> None:
    """The span guard measures views whose storage reaches past their values (the stepped and column slices): with
    256 MiB of room they are read, every figure as with no limit."""
    path = _views_bin(tmp_path / "views.bin")
    free = _limited(0, *command, path, "--json")
    limited = _limited(256 * MIB, *command, path, "--json")
    assert free.returncode in (0, 1) and limited.returncode == free.returncode, (free.stderr, limited.stderr)
    assert json.loads(limited.stdout) == json.loads(free.stdout)
    names = json.dumps(json.loads(free.stdout))
    assert all(name in names for name in ("stepped.weight", "columns.weight", "offset.bias", "lm_head.weight"))


# Red team 39: check-dtype --sample, whose refusal of the span's map (memory5's guard) was pinned here, reads the
# elements by position from the file as inspect --stats --sample does since red team 38 (a cut file gave SIGBUS).
@pytest.mark.parametrize("command", [("inspect", "--stats"), ("check-dtype",)])
def test_a_sample_of_a_view_spread_over_its_storage_is_read_without_mapping_its_span(
        tmp_path: Path, command: tuple[str, ...]) -> None:
    """Red team 38: inspect --stats --sample reads the elements it samples from the file (StaticTensor.gather),
    4 MiB of pages at a time, not through a map of the view's whole span: with the room that refused the map, the
    figures are those of a run without a limit. Red team 39: check-dtype --sample too (it was refused, "is a view
    spread over 67.09 MB of its storage, all of it mapped to read it")."""
    path = tmp_path / "columns.bin"
    storage = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(6))  # 64 MiB
    torch.save({"columns.weight": storage[:, :2]}, path)
    free = _limited(0, *command, path, "--sample", "100", "--json")
    done = _limited(24 * MIB, *command, path, "--sample", "100", "--json")
    assert free.returncode in (0, 1) and done.returncode == free.returncode, (free.stderr, done.stderr)
    assert json.loads(done.stdout) == json.loads(free.stdout)
    assert "columns.weight" in done.stdout
