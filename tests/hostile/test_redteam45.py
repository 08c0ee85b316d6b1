"""Red team 45: flat pickles of millions of opcodes, and hostile files the suite did not cover yet.

A pickle of a flat list of 8,000,000 None (8 MB) took `inspect` 9.2 s (27 s on the loaded test machine): no bound
of red team 44 (nesting) held it, only `MAX_PICKLE_MEMBER` (256 MB: minutes). The walk now refuses a pickle whose
opcodes are more than its tensor storages and containers explain (`opcodes.MAX_UNEXPLAINED_OPCODES`,
`OPCODES_PER_STRUCTURE`), in one line naming the file: 5 s on that machine, where genuine checkpoints (5-31 opcodes a
storage or container, measured) still read.
"""

from __future__ import annotations

import io
import pickle
import signal
from pathlib import Path

import torch

from tests.helpers import one_error_line, run_cli, torch_zip_with_data_pkl
from weightdoctor.security import opcodes, scan_file

FLAT = 8_000_000


def _assert_refused_for_its_opcodes(path: Path, *args: str) -> None:
    signal.alarm(60)  # 9-27 s before (loaded machine), about 5 s now
    result = run_cli(*args, str(path))
    signal.alarm(0)
    line = one_error_line(result)
    assert str(path) in line
    assert "suspicious" in line
    assert "opcodes walked where its" in line
    assert f"no checkpoint's pickle holds more than {opcodes.OPCODES_PER_STRUCTURE} a storage or container" in line


def test_a_flat_list_of_millions_of_nones_is_refused_in_one_line(tmp_path: Path, alarm: None) -> None:
    path = tmp_path / "flat.bin"
    path.write_bytes(pickle.dumps([None] * FLAT, protocol=2))
    _assert_refused_for_its_opcodes(path, "inspect")


def test_a_state_dict_padded_with_a_flat_list_is_refused_by_every_reader(tmp_path: Path, alarm: None) -> None:
    path = tmp_path / "padded.pt"
    torch.save({"w": torch.zeros(2), "junk": [None] * FLAT}, path)
    _assert_refused_for_its_opcodes(path, "inspect", "--json")
    _assert_refused_for_its_opcodes(path, "check-dtype")


def test_marks_popped_again_count_as_opcodes_too() -> None:
    """MARK, POP_MARK pushes no value and builds no container: 1,100,000 pairs in a torch zip, no leaf among them."""
    count = 1_100_000
    data = b"\x80\x02" + b"(1" * count + b"}."
    walk = opcodes.walk_pickle(io.BytesIO(data), len(data))
    assert walk.error is not None and "opcodes walked" in walk.error
    # Counted every 65,536 opcodes: stopped within that of the bound, far from the pickle's 2,200,003.
    assert walk.error_offset is not None
    assert walk.error_offset < 2 + 2 * (opcodes.MAX_UNEXPLAINED_OPCODES + 2**16)


def test_the_bound_grows_with_the_tensors_and_containers(tmp_path: Path) -> None:
    """2,500,000 leaf opcodes pass beside 10,000 tensors (64 each explain 640,000 more), not beside one."""
    leaves = 2_500_000 - 20 * 10_000
    state = {f"t{i}": torch.zeros(1) for i in range(10_000)}
    genuine = tmp_path / "explained.pt"
    torch.save({**state, "values": [None] * leaves}, genuine)
    assert scan_file(genuine).verdict == "safe"
    padded = tmp_path / "unexplained.pt"
    torch.save({"t0": torch.zeros(1), "values": [None] * leaves}, padded)
    report = scan_file(padded)
    assert report.verdict == "suspicious" and "opcodes walked" in report.summary(), report.summary()


def test_a_lightning_like_checkpoint_with_many_leaf_values_still_reads(tmp_path: Path) -> None:
    """Adam's state, a scheduler, loops and callbacks, hyper-parameters holding a 50,000-token vocabulary and a
    100,000-value loss history (236,520 opcodes, 31 a storage or container) scan as safe and read, zip and legacy."""
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(300)]
    optimizer = torch.optim.Adam(params)
    for param in params:
        param.grad = torch.ones(3)
    optimizer.step()
    checkpoint = {
        "epoch": 5, "global_step": 1000,
        "state_dict": {f"layer.{i}.weight": p.detach() for i, p in enumerate(params)},
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 5, "completed": 5}}}},
        "callbacks": {"ModelCheckpoint": {"best_k_models": {f"epoch={i}.ckpt": torch.tensor(0.1 * i)
                                                            for i in range(10)}}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [torch.optim.lr_scheduler.StepLR(optimizer, 10).state_dict()],
        "hyper_parameters": {"vocab": [f"tok{i}" for i in range(50_000)],
                             "loss_history": [0.1 * i for i in range(100_000)]},
    }
    for name, options in (("zip.ckpt", {}), ("legacy.ckpt", {"_use_new_zipfile_serialization": False})):
        path = tmp_path / name
        torch.save(checkpoint, path, **options)
        assert scan_file(path).verdict == "safe", name
        result = run_cli("inspect", str(path), "--key", "state_dict", "--json")
        assert result.exit_code == 0, (name, result.stderr)
        assert '"layer.299.weight"' in result.stdout


def test_the_fixtures_pickles_stay_safe(fx: dict[str, Path]) -> None:
    files = [fx["files"] / name for name in ("bert.bin", "bert-legacy.bin", "gpt2-tied.bin", "training.pt",
                                             "ddp-nested.pth")]
    files += sorted(fx["bert-sharded-bin"].glob("*.bin")) + [fx["roberta-bin"] / "pytorch_model.bin"]
    for path in files:
        assert scan_file(path).verdict == "safe", path


def test_a_hand_made_data_pkl_of_nones_in_a_torch_zip_is_refused(tmp_path: Path, alarm: None) -> None:
    body = b"\x80\x02]" + (b"(" + b"N" * 1000 + b"e") * 2_100 + b"."
    path = torch_zip_with_data_pkl(tmp_path, "nones", body)
    _assert_refused_for_its_opcodes(path, "diff-keys", str(path))
