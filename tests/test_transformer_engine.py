"""Megatron-LM / NeMo checkpoints of models built with NVIDIA TransformerEngine: every TE module keeps its FP8
scaling state as `<module>._extra_state` beside its tensors (nn.Module.get_extra_state), an io.BytesIO in TE before
1.x and None where the module has no FP8 state. A third of the state dict's entries are not tensors, and the
BytesIO's global `_io.BytesIO` was called dangerous: every such checkpoint was refused ("dangerous: _io.BytesIO",
then, with that read as data, "no state dict found")."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers import run_cli, run_json
from weightdoctor.security.policy import classify

LAYERS = 40


def _megatron_te_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """`model_optim_rng.pt` as Megatron-LM's save_checkpoint writes it for a TE GPT model (mcore layer names)."""
    torch.manual_seed(0)
    state: dict[str, object] = {}
    tensors: dict[str, torch.Tensor] = {"embedding.word_embeddings.weight": torch.randn(10, 4)}
    for i in range(LAYERS):
        prefix = f"decoder.layers.{i}."
        layer = {prefix + "self_attention.linear_qkv.layer_norm_weight": torch.ones(4),
                 prefix + "self_attention.linear_qkv.weight": torch.randn(12, 4),
                 prefix + "self_attention.linear_proj.weight": torch.randn(4, 4),
                 prefix + "mlp.linear_fc1.weight": torch.randn(16, 4),
                 prefix + "mlp.linear_fc2.weight": torch.randn(4, 8)}
        tensors.update(layer)
        state.update(layer)
        for module in ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2"):
            state[f"{prefix}{module}._extra_state"] = io.BytesIO(b"\x80\x04fp8 scaling state")
        state[prefix + "self_attention.core_attention._extra_state"] = None
    state["embedding.word_embeddings.weight"] = tensors["embedding.word_embeddings.weight"]
    torch.save({"model": state, "checkpoint_version": 3.0, "iteration": 1000}, path)
    return tensors


def test_a_transformer_engine_checkpoint_is_read_with_its_extra_state_said(tmp_path: Path) -> None:
    path = tmp_path / "model_optim_rng.pt"
    tensors = _megatron_te_checkpoint(path)
    code, report = run_json("inspect", str(path), "--json")
    assert code == 0, report
    assert report["nested_key"] == "model"
    assert report["security"]["verdict"] == "safe"
    assert {t["name"] for t in report["tensors"]} == set(tensors)
    skipped = report["skipped_entries"]
    assert len(skipped) == 5 * LAYERS
    assert "decoder.layers.0.self_attention.linear_qkv._extra_state (_io.BytesIO, read as inert data)" in skipped
    assert "decoder.layers.0.self_attention.core_attention._extra_state (NoneType: None)" in skipped

    human = run_cli("inspect", str(path))
    assert human.exit_code == 0, human.stderr
    text = " ".join(human.stdout.split())
    # Every entry counted, folded over the layers (the first six alone were shown, with no word of the others).
    row = text.split("non-tensor entries", 1)[1].split("security", 1)[0].replace("│", "").replace(" ", "")
    for module in ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2"):
        assert f"decoder.layers.*.{module}._extra_state(_io.BytesIO,readasinertdata)×{LAYERS}" in row, row
    assert f"decoder.layers.*.self_attention.core_attention._extra_state(NoneType:None)×{LAYERS}" in row, row
    assert "more" not in row, row
    assert "read as inert data" in text and "dangerous" not in text


def test_convert_writes_the_weights_and_says_the_extra_state_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "model_optim_rng.pt"
    tensors = _megatron_te_checkpoint(path)
    out = tmp_path / "model.safetensors"
    result = run_cli("convert", str(path), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    written = load_file(out)
    assert written.keys() == tensors.keys()
    assert all(torch.equal(written[name], value) for name, value in tensors.items())
    warnings = " ".join(json.loads(result.stdout)["warnings"])
    assert f"{5 * LAYERS} non-tensor entries of the state dict are not written" in warnings
    assert "_extra_state (_io.BytesIO, read as inert data)" in warnings


def test_only_the_in_memory_buffer_of_io_is_data() -> None:
    assert classify("_io", "BytesIO") == classify("io", "BytesIO") == "inert"
    for module, name in (("_io", "FileIO"), ("io", "open"), ("_io", "open"), ("_io", "BytesIO.write"),
                         ("io", "BytesIO.__init__"), ("_io", "TextIOWrapper")):
        assert classify(module, name) == "dangerous", (module, name)


def test_a_mapping_of_extra_states_alone_is_no_state_dict(tmp_path: Path) -> None:
    """Left out of the share of tensors, `_extra_state` entries cannot make a dict of nothing else a state dict."""
    path = tmp_path / "extra.pt"
    torch.save({"model": {"a._extra_state": None, "b._extra_state": io.BytesIO(b"x")}, "weights": {"w": torch.ones(2)}},
               path)
    code, report = run_json("inspect", str(path), "--json")
    assert code == 0, report
    assert report["nested_key"] == "weights" and [t["name"] for t in report["tensors"]] == ["w"]
