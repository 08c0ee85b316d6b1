"""Round 18 of speed work on diff-keys (the reader's costs outside the JSON parse): each shortcut gives exactly
what the plain code gave.

- `diff_checkpoints` takes each side's specs as a copy of the name index the checkpoint built when it was opened
  (`checkpoint_specs`) instead of a second comprehension over its tensors: held to `specs_from_tensors` (the same
  dict, keys in the same order, the same objects) on safetensors, a pickle, duplicate names and list shapes.
- `_parse_header` counts the header's "{" only when the text is longer than the bound on them (a shorter text
  cannot pass it): held to the count on headers on both sides of the bound.
- The TRL value-head warning looks for `v_head.` in the names joined before it tests each name's start: held to
  the test of every name, with `v_head.` inside names, at their start and nowhere.
- One stat fewer each where an open asked the same thing twice: a weight file's size from the stat
  `require_regular_file` took, an absent config.json asked once: the refusals and reads are unchanged.

Nothing here is timed: benchmarks/bench_diff_keys.py and docs/bench-diff-keys.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import struct
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_json
from weightdoctor.checkpoint import Checkpoint, open_checkpoint, safetensors_format
from weightdoctor.checkpoint.model import TensorInfo
from weightdoctor.checkpoint.reader import require_regular_file
from weightdoctor.diff_keys import KeySpec, checkpoint_specs, diff_checkpoints, diff_specs, specs_from_tensors
from weightdoctor.errors import CorruptCheckpoint, UnsupportedFormat


def _header(names: list[str], shapes: list[list[int]] | None = None) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for i, name in enumerate(names):
        shape = shapes[i] if shapes else [1]
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * ((8 - len(raw) % 8) % 8)


def _write(path: Path, names: list[str], shapes: list[list[int]] | None = None) -> Path:
    raw = _header(names, shapes)
    data = sum(4 * math.prod(shape) for shape in shapes or [[1]] * len(names))
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data)
    return path


def _same_specs(fast: dict[str, KeySpec], plain: dict[str, KeySpec]) -> None:
    assert list(fast) == list(plain)
    assert all(fast[name] is plain[name] or fast[name] == plain[name] for name in plain)
    assert [type(value) for value in fast.values()] == [type(value) for value in plain.values()]


def test_checkpoint_specs_copy_the_index_of_a_safetensors_file(tmp_path: Path) -> None:
    rng = random.Random(18)
    names = [f"model.layers.{i}.{part}.weight" for i in range(6) for part in ("q", "k", "v")]
    rng.shuffle(names)
    shapes = [[rng.randrange(1, 4), rng.randrange(0, 3)] for _ in names]
    with open_checkpoint(_write(tmp_path / "m.safetensors", names, shapes)) as checkpoint:
        fast = checkpoint_specs(checkpoint)
        plain = specs_from_tensors(checkpoint.tensors)
        _same_specs(fast, plain)
        assert all(fast[name] is plain[name] for name in plain)  # the reader's own TensorInfos, not copies
        assert list(fast) == names  # file order
        assert fast is not checkpoint._by_name  # a copy: a caller that changes it leaves the index alone
        fast.clear()
        assert len(checkpoint._by_name) == len(names)


def test_checkpoint_specs_of_a_pickle_equal_the_plain_specs(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    weight = torch.zeros(3, 2)
    torch.save({"b.weight": weight, "a.bias": torch.zeros(3), "tied.weight": weight}, path)
    with open_checkpoint(path) as checkpoint:
        _same_specs(checkpoint_specs(checkpoint), specs_from_tensors(checkpoint.tensors))
        assert list(checkpoint_specs(checkpoint)) == ["b.weight", "a.bias", "tied.weight"]


def test_checkpoint_specs_take_the_plain_path_for_duplicates_and_list_shapes() -> None:
    """Where the index cannot be the specs (a name twice: the index is shorter; a list shape: specs_from_tensors
    makes a KeySpec of it), the plain function answers, and gives what it gave."""
    infos = [TensorInfo("a", (2,), "float32", "f"), TensorInfo("b", (3,), "float16", "f"),
             TensorInfo("a", (4,), "float32", "g")]
    twice = Checkpoint(source="x", path=Path("x"), format="safetensors", sharded=True, files=[], tensors=infos)
    assert len(twice._by_name) == 2
    _same_specs(checkpoint_specs(twice), specs_from_tensors(infos))
    assert checkpoint_specs(twice)["a"].shape == (4,)  # the last one, as the comprehension keeps it

    listed = [TensorInfo("a", [2, 3], "float32", "f"), TensorInfo("b", (3,), "float16", "f")]  # type: ignore[arg-type]
    odd = Checkpoint(source="x", path=Path("x"), format="safetensors", sharded=False, files=[], tensors=listed)
    specs = checkpoint_specs(odd)
    _same_specs(specs, specs_from_tensors(listed))
    assert specs["a"] == KeySpec("a", (2, 3), "float32") and specs["b"] is listed[1]

    assert checkpoint_specs(Checkpoint(source="x", path=Path("x"), format="safetensors", sharded=False, files=[],
                                       tensors=[])) == {}


def test_diff_reports_equal_along_both_paths(tmp_path: Path) -> None:
    """The whole report of `diff_checkpoints` (with the index copied) equals `diff_specs` fed by
    `specs_from_tensors`, on a DDP prefix, a dropped key, a resized one and a tied pair."""
    names = ["model.embed.weight", "model.layers.0.q.weight", "model.layers.1.q.weight", "lm_head.weight"]
    a = _write(tmp_path / "a.safetensors", ["module." + n for n in names[:3]], [[4, 2], [2, 2], [2, 3]])
    b = _write(tmp_path / "b.safetensors", names, [[4, 2], [2, 2], [2, 2], [4, 2]])
    c = _write(tmp_path / "c.safetensors", names[1:], [[2, 2], [2, 3], [4, 2]])
    for left, right in ((a, b), (b, a), (c, b), (b, c)):
        with open_checkpoint(left) as ca, open_checkpoint(right) as cb:
            report = diff_checkpoints(ca, cb)
            plain = diff_specs(specs_from_tensors(ca.tensors), specs_from_tensors(cb.tensors), source_a=ca.source,
                               source_b=cb.source, tied_groups_a=ca.alias_groups(),
                               tied_groups_b=cb.alias_groups(), tie_embeddings=None, base_prefix_loads=False)
            plain.revision_a, plain.resolved_a = ca.revision, ca.location
            plain.revision_b, plain.resolved_b = cb.revision, cb.location
            assert dataclasses.asdict(report) == dataclasses.asdict(plain)
            assert report.missing or report.unexpected or report.mismatched  # something to compare


@pytest.mark.parametrize("seed", range(3))
def test_brace_bound_verdict_equals_the_count(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """A header is refused for its "{" count exactly when the count passes the bound, whether the text is longer
    than the bound (counted) or not (not counted: it cannot pass it)."""
    rng = random.Random(seed)
    for _ in range(20):
        names = [f"t{i}" for i in range(rng.randrange(1, 12))]
        raw = _header(names)
        braces = raw.count(b"{")
        # Bounds on either side of the text's length and of its count of "{".
        for bound in {1, braces - 3, braces - 2, braces - 1, len(raw) - 3, len(raw) - 2, len(raw) - 1, len(raw)}:
            if bound < 1:
                continue
            monkeypatch.setattr(safetensors_format, "MAX_TENSORS", bound)
            refused = braces > bound + 2
            try:
                safetensors_format._parse_header(raw, "m.safetensors", 4 * len(names))
            except CorruptCheckpoint as exc:
                assert refused and exc.message == (f"header holds {braces - 1:,} JSON objects, so up to that many "
                                                   f"tensors (the limit is {bound:,})"), (bound, exc.message)
            else:
                assert not refused, (bound, braces)


def test_millions_of_braces_in_a_short_name_list_are_still_counted(tmp_path: Path) -> None:
    """A text longer than the bound is counted: one entry whose metadata value is 300,000 "{" characters inside
    a string (JSON objects to the count, not to the parse) is refused before it is parsed, as before."""
    filler = "{" * 300_000
    raw = json.dumps({"__metadata__": {"x": filler}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                     separators=(",", ":")).encode()
    path = tmp_path / "braces.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(CorruptCheckpoint, match="JSON objects, so up to that many tensors"):
        open_checkpoint(path)


@pytest.mark.parametrize("seed", range(3))
def test_value_head_warning_equals_the_test_of_every_name(tmp_path: Path, seed: int) -> None:
    """The TRL value-head warning, with `v_head.` at a name's start, inside names only, or nowhere."""
    rng = random.Random(seed)
    pool = ["v_head.summary.weight", "v_head.summary.bias", "x.v_head.w", "policy.v_head.b", "model.embed.weight",
            "transformer.wte.weight", "lm_head.weight", "v_headless.w", "head.weight"]
    said = [0, 0]
    for case in range(20):
        names = list(dict.fromkeys(rng.sample(pool, rng.randrange(1, len(pool)))))
        code, report = run_json("inspect", str(_write(tmp_path / f"v{seed}-{case}.safetensors", names)), "--json")
        assert code == 0, report
        value_head = sorted(n for n in names if n.startswith("v_head."))
        trl = bool(value_head) and any(n.startswith(("transformer.", "model.", "lm_head.")) for n in names)
        text = json.dumps(report)
        assert (f"a TRL value head ({', '.join(value_head[:2])}) beside the language model" in text) == trl, names
        assert ("a TRL value head" in text) == trl, names
        said[trl] += 1
    assert all(said)


def test_require_regular_file_gives_the_stat_it_took_and_refuses_as_before(tmp_path: Path) -> None:
    """add_weight_file takes the file's size from the stat `require_regular_file` took (one stat, not two): the same
    stat as `os.stat`; a FIFO refused in the same words; None for a missing path, whose open says what is wrong."""
    path = _write(tmp_path / "m.safetensors", ["w"])
    found = require_regular_file(path)
    assert found is not None and found.st_size == os.stat(path).st_size == path.stat().st_size
    assert found.st_ino == os.stat(path).st_ino
    assert require_regular_file(tmp_path / "absent.safetensors") is None
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(UnsupportedFormat, match=r"not a regular file \(a FIFO\)"):
        require_regular_file(fifo)
    result = run_cli("inspect", str(fifo), "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"error: {fifo}: not a regular file (a FIFO); give a checkpoint "
                                                  "file or folder"]


def test_config_json_beside_a_file_is_read_or_refused_as_before(tmp_path: Path) -> None:
    """`_load_config` asks whether config.json exists first (one stat where it does not): absent or a link to
    nothing reads no config (the link said in a warning), a folder or a FIFO is refused naming it, a file is read."""
    said: dict[str, tuple[int, str, str]] = {}
    for case in ("absent", "broken-link", "folder", "fifo", "file"):
        folder = tmp_path / case
        folder.mkdir()
        _write(folder / "model.safetensors", ["w"])
        config = folder / "config.json"
        if case == "broken-link":
            config.symlink_to(folder / "nothing.json")
        elif case == "folder":
            config.mkdir()
        elif case == "fifo":
            os.mkfifo(config)
        elif case == "file":
            config.write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
        result = run_cli("inspect", str(folder / "model.safetensors"), "--json")
        said[case] = (result.exit_code, result.stdout, result.stderr)
    roles = {case: [f["role"] for f in json.loads(out)["files"]] for case, (code, out, _) in said.items() if code == 0}
    assert roles == {"absent": ["weights"], "broken-link": ["weights"], "file": ["weights", "config"]}
    assert "config.json is a link to" in said["broken-link"][1] and "config.json is a link" not in said["absent"][1]
    for case, kind in (("folder", "a folder"), ("fifo", "a FIFO")):
        code, out, err = said[case]
        assert code == 2 and out == "" and err.strip().splitlines() == [
            f"error: {tmp_path / case / 'config.json'}: config.json is not a regular file ({kind})"]
