"""review23: the scandir listings, the DINO teacher rule, `--key` numbers and convert's resolve-once change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli
from weightdoctor.checkpoint.pytorch_format import _self_distillation_teacher


@pytest.mark.parametrize("key", ["²", "0²", "١"])
def test_key_of_non_ascii_digits_is_no_index(tmp_path: Path, key: str) -> None:
    # str.isdigit() is true of '²', which int() refuses: the command ended in 'unexpected ValueError'. '١' (an
    # Arabic-Indic one) read the list's item 1, a key no one typed as an index.
    path = tmp_path / "ensemble.pt"
    torch.save([{"a.weight": torch.zeros(2)}, {"b.weight": torch.zeros(2)}], path)
    result = run_cli("inspect", str(path), "--key", key)
    assert result.exit_code == 2
    assert "unexpected" not in result.stderr
    assert f"{key!r} is not an index of a list of 2 items" in result.stderr


def test_key_of_superscript_digits_in_an_int_keyed_dict(tmp_path: Path) -> None:
    path = tmp_path / "hypernetwork.pt"
    torch.save({320: [{"linear.0.weight": torch.zeros(2, 2)}], 640: [{"linear.0.weight": torch.zeros(2, 2)}],
                "name": "h"}, path)
    result = run_cli("inspect", str(path), "--key", "³20.0")
    assert result.exit_code == 2
    assert "unexpected" not in result.stderr
    assert "no entry '³20'" in result.stderr


def test_ddp_student_and_ibot_extra_keys_keep_the_teacher_rule() -> None:
    block = {"backbone.blocks.0.attn.qkv.weight": torch.zeros(1), "head.last_layer.weight_g": torch.zeros(1)}
    loss = {"center": torch.zeros(1)}
    # DINO: the student wrapped in DistributedDataParallel, the teacher (no batch norms) not.
    assert _self_distillation_teacher({"student": {f"module.{k}": v for k, v in block.items()}, "teacher": block,
                                       "dino_loss": loss})
    # iBOT: the student alone holds masked_embed.
    assert _self_distillation_teacher({"student": {**block, "backbone.masked_embed": torch.zeros(1)},
                                       "teacher": block, "ibot_loss": loss})
    # Knowledge distillation: a teacher of other names keeps the student.
    assert not _self_distillation_teacher({"student": block, "teacher": {"bert.encoder.weight": torch.zeros(1)},
                                           "kd_loss": loss})


def test_convert_of_a_folder_whose_weights_link_outside_it(tmp_path: Path) -> None:
    # The converted weight file itself, a link to a file elsewhere (a shared store), was reported "not copied: ... a
    # link to a file outside the model folder", as if something of the model had been dropped; a link to a file
    # inside the folder is copied as a regular file, a link outside still left out.
    store, model = tmp_path / "store", tmp_path / "model"
    store.mkdir()
    model.mkdir()
    save_file({"a.weight": torch.ones(2, 2)}, str(store / "weights.safetensors"))
    (model / "model.safetensors").symlink_to(store / "weights.safetensors")
    (model / "config.json").write_text("{}")
    (model / "generation_config.json").symlink_to("config.json")
    (store / "secret.txt").write_text("not the model's")
    (model / "notes.txt").symlink_to(store / "secret.txt")
    out = tmp_path / "out"
    result = run_cli("convert", str(model), "-o", str(out), "--dtype", "fp16")
    assert result.exit_code == 0, result.stderr
    assert "model.safetensors (a link" not in result.stderr
    assert "notes.txt (a link to a file outside the model folder)" in result.stderr
    assert (out / "generation_config.json").is_file() and not (out / "generation_config.json").is_symlink()
    assert not (out / "notes.txt").exists()


def test_pattern_time_limit_in_a_worker_thread_beside_busy_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit is the matching thread's CPU time: matching run in a worker thread while other threads of the same
    process keep the interpreter busy gives the answer of an idle process (the process's CPU time, or wall time, ran
    out several times sooner and left layers unknown)."""
    import threading
    import time

    from weightdoctor import quantized

    quantization = {"quant_method": "compressed-tensors", "config_groups": {
        "g0": {"weights": {"num_bits": 4}, "targets": [r"re:.*mlp\.(?:up|down)_proj.*"]},
        "g1": {"weights": {"num_bits": 8}, "targets": [r"re:.*self_attn\.[qkvo]_proj.*"]}}}
    names = [f"model.layers.{i}.{part}.weight_packed" for i in range(3000)
             for part in ("mlp.up_proj", "self_attn.q_proj")]
    expected = {name: 4 if ".mlp." in name else 8 for name in names}
    start = time.thread_time()
    assert quantized._compressed_tensors_layer_bits(names, quantization, []) == expected
    alone = time.thread_time() - start
    # Three times the CPU time it needs alone; six busy threads take five sixths of the interpreter meanwhile.
    monkeypatch.setattr(quantized, "_PATTERN_SECONDS", 3 * alone + 0.01)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    spinners = [threading.Thread(target=spin) for _ in range(6)]
    result: dict[str, object] = {}
    notes: list[str] = []
    worker = threading.Thread(target=lambda: result.update(quantized._compressed_tensors_layer_bits(
        names, quantization, notes)))
    for thread in spinners:
        thread.start()
    try:
        worker.start()
        worker.join()
    finally:
        stop.set()
        for thread in spinners:
            thread.join()
    assert notes == [] and result == expected
