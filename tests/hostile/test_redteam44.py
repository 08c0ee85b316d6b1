"""Red team 44: pickles nested so deep that every reader walks them for seconds (minutes under the 256 MB bound).

A 2 MB pickle of 1,000,000 nested lists took inspect 5.8 s (the opcode walk, then the readers after it) and an 8 MB
one of nested dicts 10.0 s and 300 MB; 256 MB of them (`MAX_PICKLE_MEMBER`) would take minutes. The walk now refuses
a pickle holding more than `opcodes.MAX_OPEN_CONTAINERS` containers and MARKs on its stack at once (genuine
checkpoints, measured: at most 57), in one line naming the file: 0.5 s for the 2 MB file, 0.6 s for the 8 MB one.
"""

from __future__ import annotations

import io
import signal
import zipfile
from pathlib import Path

import torch

from tests.helpers import run_cli
from weightdoctor.security import opcodes, scan_file

LEVELS = 2_000_000


def _nested_lists(levels: int) -> bytes:
    """{"w": [[[...]]]}, `levels` lists deep: EMPTY_LIST each, then APPEND each into its parent (pickle's own way)."""
    return b"\x80\x02}X\x01\x00\x00\x00w" + b"]" * levels + b"a" * (levels - 1) + b"s."


def _nested_dicts(levels: int) -> bytes:
    """{"k": {"k": {...}}}, `levels` dicts deep, each SETITEM into its parent."""
    return b"\x80\x02" + b"}X\x01\x00\x00\x00k" * levels + b"}" + b"s" * levels + b"."


def _nested_tuples(levels: int) -> bytes:
    """((((),),),) as a pickler writes a tuple of more than 3 items: MARK, its items, TUPLE."""
    return b"\x80\x02" + b"(" * levels + b")" + b"t" * levels + b"."


def _torch_save_with_data_pkl(path: Path, data_pkl: bytes) -> None:
    """A torch.save zip of one tensor whose data.pkl is replaced."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            data = source.read(info)
            out.writestr(info, data_pkl if info.filename.endswith("data.pkl") else data)


def _assert_refused(path: Path) -> None:
    signal.alarm(40)  # 2M levels took inspect 13-30 s before (loaded machine), under 1 s now
    result = run_cli("inspect", path)
    signal.alarm(0)
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert "suspicious" in lines[0]
    assert "containers and marks wait on its stack at once" in lines[0]
    assert f"more than the {opcodes.MAX_OPEN_CONTAINERS:,} any checkpoint's pickle holds" in lines[0]
    assert "refused there" in lines[0] and "cannot be parsed" not in lines[0]


def test_nested_lists_in_a_torch_save_zip_are_refused_quickly(tmp_path: Path, alarm: None) -> None:
    path = tmp_path / "nested.pt"
    _torch_save_with_data_pkl(path, _nested_lists(LEVELS))
    _assert_refused(path)


def test_nested_dicts_in_a_plain_pickle_are_refused_quickly(tmp_path: Path, alarm: None) -> None:
    path = tmp_path / "nested.bin"
    path.write_bytes(_nested_dicts(LEVELS))
    _assert_refused(path)


def test_nested_protocol_0_tuples_are_refused_quickly(tmp_path: Path, alarm: None) -> None:
    path = tmp_path / "tuples.bin"
    path.write_bytes(_nested_tuples(LEVELS))
    _assert_refused(path)


def test_the_walk_stops_at_the_bound_not_at_the_end() -> None:
    data = _nested_lists(LEVELS)
    walk = opcodes.walk_pickle(io.BytesIO(data), len(data))
    assert walk.error is not None and "containers and marks" in walk.error
    # Counted at each doubling of the stack: stopped within twice the bound, far from the file's 4 MB.
    assert walk.error_offset is not None and walk.error_offset < 4 * opcodes.MAX_OPEN_CONTAINERS


def test_deep_but_genuine_checkpoints_still_read(tmp_path: Path) -> None:
    """A Lightning-like checkpoint with Adam's state over 1,500 parameters (a batch of 1,000 state dicts waits on the
    stack) and hyper-parameters nested 200 deep scans as safe in the zip and legacy protocols 0-2, and reads."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(1_500)]
    optimizer = torch.optim.Adam(params)
    for param in params:
        param.grad = torch.ones(1)
    optimizer.step()
    nested: dict[str, object] = {"leaf": [1, 2, 3]}
    for _ in range(200):
        nested = {"inner": nested}
    checkpoint = {"state_dict": {f"layer.{i}.weight": p.detach() for i, p in enumerate(params)},
                  "optimizer_states": [optimizer.state_dict()], "hyper_parameters": nested, "epoch": 1}
    saves = {"zip.ckpt": {}, **{f"p{protocol}.ckpt": {"pickle_protocol": protocol,
                                                      "_use_new_zipfile_serialization": False}
                                for protocol in (0, 1, 2)}}
    for name, options in saves.items():
        path = tmp_path / name
        torch.save(checkpoint, path, **options)
        assert scan_file(path).verdict == "safe", name
        if name in ("p0.ckpt", "p1.ckpt"):
            continue  # a legacy file of protocol 0 or 1 is refused as such (not torch.save's defaults), scan or not
        result = run_cli("inspect", path, "--key", "state_dict", "--json")
        assert result.exit_code == 0, (name, result.stderr)
        assert '"verdict": "safe"' in result.stdout, name


def test_the_buffer_search_skips_leaf_values_quickly(alarm: None) -> None:
    """`_buffers_in` (run on every pickle that loads) pushed each distinct int, float and str with its place built as
    text: 1,000,000 ints, 2,000,000 Nones and 100,000 floats took 3.2 s, 4,000,000 ints (a 20 MB pickle of a flat
    list, under every bound) about 10 s. They are left out now; a bytes value beside them is still found."""
    from weightdoctor.checkpoint.pytorch_format import _buffers_in

    obj = {"flat": list(range(4_000_000)), "mixed": [1, 2.0, "x", True, None, b"\x80\x02N."]}
    signal.alarm(6)  # about 0.2-0.5 s now (loaded machine); 3-10 s before
    found = _buffers_in(obj)
    signal.alarm(0)
    assert found == [("mixed.5", b"\x80\x02N.", False)]
