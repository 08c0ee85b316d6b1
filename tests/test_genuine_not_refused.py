"""Genuine checkpoints written by the real libraries are not refused by the scans of data a loader unpickles later.

The bytes-value, `_extra_state`, DCP, accelerate `custom_checkpoint_N.pkl` and `.npy` scans (docs/security.md,
"Pickles inside tensors" and "Other data a loader unpickles later") refuse a file with exit 2. A false refusal of a
genuine checkpoint is the worst failure they can have, so each file here is written by the library that writes it
in practice (transformers' Trainer, accelerate's save_state, torch.distributed.checkpoint, PEFT, numpy, torch.save
of RNG states and bytes metadata), and every command that reads it must either read it or say truthfully why not
(no weights in it), never call it suspicious or dangerous.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import one_error_line, run_cli, train_tiny_gpt2

# Words of a security refusal: none may appear for a genuine file.
_REFUSAL_WORDS = ("suspicious", "dangerous", "unsafe", "may run code")


def _not_a_refusal(text: str) -> None:
    lowered = text.lower()
    assert not any(word in lowered for word in _REFUSAL_WORDS), text


def _inspect_json(path: Path) -> dict[str, Any]:
    result = run_cli("inspect", str(path), "--json")
    _not_a_refusal(result.stderr)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _rng_states() -> dict[str, Any]:
    """Every RNG state a training loop saves: numpy's legacy and new-style, Python's, torch's."""
    return {"numpy": np.random.get_state(), "numpy_pcg64": np.random.default_rng(0).bit_generator.state,
            "python": random.getstate(), "cpu": torch.get_rng_state()}


def test_a_trainer_checkpoint_folder_is_read_and_its_training_files_are_named_not_refused(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    train_tiny_gpt2(tmp_path / "run", max_steps=1)
    checkpoint = tmp_path / "run" / "checkpoint-1"
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= {
        p.name for p in checkpoint.iterdir()}

    report = _inspect_json(checkpoint)
    assert report["num_tensors"] >= 10 and report["num_params"] > 0
    assert run_cli("check-dtype", str(checkpoint)).exit_code == 0
    assert run_cli("plan-devices", str(checkpoint), "--gpu", "1GB", "--cpu", "1GB").exit_code == 0
    dry = run_cli("convert", "--dry-run", str(checkpoint), "-o", str(tmp_path / "out.safetensors"))
    assert dry.exit_code == 0, dry.stderr
    assert not (tmp_path / "out.safetensors").exists()
    # Each training-state file alone holds no weights: exit 2 says so, in words that are true.
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        line = one_error_line(run_cli("inspect", str(checkpoint / name)))
        assert "no model weights" in line, line
        _not_a_refusal(line)


def test_an_accelerate_save_state_with_a_registered_object_holding_rng_states_is_read(tmp_path: Path) -> None:
    accelerate = pytest.importorskip("accelerate")
    accelerator = accelerate.Accelerator(cpu=True)

    class Tracker:
        def state_dict(self) -> dict[str, Any]:
            return {**_rng_states(), "step": np.int64(3), "lr": np.float32(0.1), "path": Path("/tmp/run")}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            pass

    class Sampler(torch.utils.data.Sampler):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            return iter(range(8))

        def __len__(self) -> int:
            return 8

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    loader = torch.utils.data.DataLoader(list(range(8)), sampler=Sampler(), batch_size=2)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(Tracker())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    folder = tmp_path / "state"
    accelerator.save_state(str(folder))
    assert (folder / "custom_checkpoint_0.pkl").is_file()

    report = _inspect_json(folder)
    assert sorted(t["name"] for t in report["tensors"]) == ["bias", "weight"]
    dry = run_cli("convert", "--dry-run", str(folder), "-o", str(tmp_path / "out"))
    assert dry.exit_code == 0, dry.stderr
    assert "custom_checkpoint_0.pkl" in dry.stderr  # named as not copied, not refused
    _not_a_refusal(dry.stderr)


def test_a_dcp_run_folder_with_optimizer_scheduler_and_rng_states_is_named_not_refused(tmp_path: Path) -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    for step in (100, 200):
        model = torch.nn.Linear(4, 4)
        optimizer = torch.optim.Adam(model.parameters())
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
        dcp.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "rng": _rng_states(),
                  "train_state": {"step": step, "losses": [1.0, 2.0]}, "blob": pickle.dumps({"a": 1})},
                 checkpoint_id=str(tmp_path / "run" / f"step-{step}"))
    for target in (tmp_path / "run", tmp_path / "run" / "step-200"):
        line = one_error_line(run_cli("inspect", str(target)))
        assert "torch.distributed.checkpoint (DCP)" in line and "dcp_to_torch_save" in line, line
        _not_a_refusal(line)


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + bytes(17)


def _zip_of_a_vocab() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("vocab.txt", "a\nb\n")
    return buffer.getvalue()


def _torch_saved(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("blob", [
    pytest.param(_png(), id="png"),
    # A sentencepiece ModelProto: protobuf of pieces ("\u2581the") and scores, as tokenizer.model holds.
    pytest.param(b"\n\x0b\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02" + b"\n\x0c\n\x06\xe2\x96\x81the\x15\x00\x00\x80\xbf"
                 * 200, id="sentencepiece"),
    pytest.param(_zip_of_a_vocab(), id="zip"),
    pytest.param(pickle.dumps({"a": [1, 2.5, "x"]}, protocol=0), id="pickle-protocol-0"),
    pytest.param(pickle.dumps(np.arange(3)), id="pickled-array"),
    pytest.param(pickle.dumps(torch.ones(2)), id="pickled-tensor"),
    pytest.param(pickle.dumps(np.random.get_state()), id="pickled-numpy-rng"),
    pytest.param(_torch_saved({"x": torch.ones(2), "rng": np.random.get_state()}), id="torch-save-bytes"),
])
def test_a_state_dict_with_genuine_bytes_metadata_is_read(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2, 2)}, "blob": blob, "rng": _rng_states()}, path)
    report = _inspect_json(path)
    assert report["nested_key"] == "state_dict" and report["num_params"] == 4


def test_rng_states_lightning_style_dict_and_te_extra_state_are_read(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.Adam(model.parameters())
    lightning = tmp_path / "last.ckpt"
    torch.save({"epoch": 1, "global_step": 2, "pytorch-lightning_version": "2.4.0", "state_dict": model.state_dict(),
                "loops": {"fit_loop": {"state_dict": {}}}, "optimizer_states": [optimizer.state_dict()],
                "lr_schedulers": [torch.optim.lr_scheduler.StepLR(optimizer, 1).state_dict()],
                "hyper_parameters": {"lr": 1e-3, "betas": (0.9, 0.99)}, "rng": _rng_states()}, lightning)
    assert _inspect_json(lightning)["num_params"] == 20

    te_state = _torch_saved({"scale": torch.ones(1), "amax_history": torch.zeros(4)})
    buffer_file, tensor_file = tmp_path / "te_bytesio.pt", tmp_path / "te_tensor.pt"
    torch.save({"layer.weight": torch.zeros(4, 4), "layer._extra_state": io.BytesIO(te_state)}, buffer_file)
    pickled = pickle.dumps({"recipe": "DelayedScaling", "fp8": True})
    torch.save({"layer.weight": torch.zeros(4, 4),
                "layer._extra_state": torch.frombuffer(bytearray(pickled), dtype=torch.uint8)}, tensor_file)
    for path in (buffer_file, tensor_file):
        assert "layer.weight" in {t["name"] for t in _inspect_json(path)["tensors"]}


@pytest.mark.parametrize("value", [
    pytest.param({**_rng_states(), "i": np.int64(3), "s": np.str_("x")}, id="dict-of-rng-states"),
    pytest.param(np.array([(1, 2.0, b"ab")], dtype=[("i", "i4"), ("f", "f8"), ("s", "S2")]), id="records"),
])
def test_an_npy_of_genuine_data_is_named_as_numpy_not_refused(tmp_path: Path, value: Any) -> None:
    path = tmp_path / "data.npy"
    np.save(path, value, allow_pickle=True)
    line = one_error_line(run_cli("inspect", str(path)))
    assert "this is a NumPy .npy array" in line, line
    _not_a_refusal(line)


def test_a_peft_adapter_saved_as_bin_is_read(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=16)
    model = peft.get_peft_model(transformers.GPT2LMHeadModel(config), peft.LoraConfig(r=2, target_modules=["c_attn"]))
    model.save_pretrained(str(tmp_path / "adapter"), safe_serialization=False)
    report = _inspect_json(tmp_path / "adapter")
    assert report["adapter"] is not None and report["num_tensors"] == 2


def test_an_npy_whose_tensor_storage_loads_a_hostile_archive_is_still_refused(tmp_path: Path) -> None:
    from tests.helpers import RunsAShellCommand

    # np.save's pickle of a tensor holds _load_from_bytes(<torch.save bytes>); here those bytes run a command.
    path = tmp_path / "data.npy"
    np.save(path, {"torch": torch.ones(2)}, allow_pickle=True)
    raw = path.read_bytes()
    header_end = raw.index(b"\n") + 1
    genuine = pickle.dumps({"torch": torch.ones(2)}, protocol=3)  # no frames: the literal can change length
    # The storage's torch.save bytes follow the call's name as one BINBYTES literal (a 4-byte length).
    start = genuine.index(b"_load_from_bytes\nq\x03B") + len(b"_load_from_bytes\nq\x03B") + 4
    size = struct.unpack("<I", genuine[start - 4:start])[0]
    hostile = pickle.dumps(RunsAShellCommand(), protocol=2)  # torch.load's first pickle.load runs it
    crafted = genuine[:start - 4] + struct.pack("<I", len(hostile)) + hostile + genuine[start + size:]
    path.write_bytes(raw[:header_end] + crafted)
    line = one_error_line(run_cli("inspect", str(path)))
    assert "dangerous" in line and "not safe" in line and "system" in line, line
