"""Review of the TransformerEngine `_extra_state` / inert io.BytesIO change and of the third-party layouts merged
with it: what `inspect` says of the non-tensor entries it folds, and of a file torch's own loader refuses."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json
from weightdoctor.render.inspect import folded_entries


def _flat(text: str) -> str:
    """A Rich table's text with its borders and line breaks gone (a cell wraps wherever the width falls)."""
    return "".join(text.replace("│", "").split())


def test_an_entry_alone_in_its_fold_keeps_its_own_name() -> None:
    entries = [f"layers.{i}.attn._extra_state (NoneType: None)" for i in range(8)] + ["layers.5.gate (int: 3)"]
    folded = folded_entries(entries)
    assert folded == ["layers.*.attn._extra_state (NoneType: None) ×8", "layers.5.gate (int: 3)"]


def test_entries_whose_descriptions_differ_are_not_folded_together() -> None:
    entries = [f"opt.{i} (bytes of {1024 * (1 + i % 2):,} bytes)" for i in range(8)]
    assert folded_entries(entries) == ["opt.* (bytes of 1,024 bytes) ×4", "opt.* (bytes of 2,048 bytes) ×4"]


def test_inspect_names_the_layer_of_a_lone_non_tensor_entry(tmp_path: Path) -> None:
    """A Megatron-style state dict with an `_extra_state` in every layer and one odd entry in layer 7: the row
    said `layers.*.mlp._extra_state (int: 3)`, as if every layer held one."""
    torch.manual_seed(0)
    state: dict[str, object] = {}
    for i in range(10):
        state[f"layers.{i}.attn.weight"] = torch.randn(2, 2)
        state[f"layers.{i}.attn._extra_state"] = io.BytesIO(b"fp8")
    state["layers.7.mlp._extra_state"] = 3
    path = tmp_path / "model_optim_rng.pt"
    torch.save({"model": state, "iteration": 1}, path)

    code, report = run_json("inspect", str(path))
    assert code == 0, report
    assert "layers.7.mlp._extra_state (int: 3)" in report["skipped_entries"]
    human = run_cli("inspect", str(path))
    assert human.exit_code == 0, human.stderr
    row = _flat(human.stdout.split("non-tensor entries", 1)[1].split("security", 1)[0])
    assert "layers.*.attn._extra_state(_io.BytesIO,readasinertdata)×10" in row, row
    assert "layers.7.mlp._extra_state(int:3)" in row, row
    assert "layers.*.mlp" not in row, row


def test_a_safe_verdict_with_inert_globals_says_torch_load_refuses_the_file(tmp_path: Path) -> None:
    """`safe ... all allowed by torch's weights_only loader, and 1 read as inert data` read as "torch.load takes
    it"; torch.load(weights_only=True), and from_pretrained with it, refuses the file."""
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2), "w._extra_state": io.BytesIO(b"fp8"), "v": torch.__version__}, path)
    try:
        torch.load(path, weights_only=True)
    except Exception as exc:  # what the note must say: torch's own loader refuses it
        assert "BytesIO" in str(exc) or "TorchVersion" in str(exc)
    else:
        raise AssertionError("torch's weights_only loader read the file: the note would be false")
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "safe (static pickle scan" in text
    assert ("_io.BytesIO, torch.torch_version.TorchVersion read as inert data: never imported, none of its code "
            "runs; torch.load(weights_only=True), as from_pretrained loads a .bin, refuses the file for them") in text

    # A file with no inert global says nothing of the kind.
    plain = tmp_path / "plain.bin"
    torch.save({"w": torch.ones(2)}, plain)
    result = run_cli("inspect", str(plain))
    assert result.exit_code == 0 and "refuses the file" not in result.stdout


def test_an_rwkv5_pth_is_not_called_rwkv4_nor_sent_to_its_converter(tmp_path: Path) -> None:
    """BlinkDL's RWKV-5 / RWKV-6 .pth share RWKV-4's `blocks.N.att.time_mix_k` / `time_decay` / `receptance` but add
    `att.ln_x`, `att.gate` and `att.time_faaaa`, which transformers' Rwkv (RWKV-4 only) has no place for: the note
    called such a file RWKV-4 and offered convert_rwkv_checkpoint_to_hf.py, whose output does not load either."""
    import json

    torch.manual_seed(0)
    hidden, vocab = 8, 20
    weights = {"emb.weight": torch.randn(vocab, hidden), "blocks.0.ln0.weight": torch.ones(hidden),
               "blocks.0.ln0.bias": torch.zeros(hidden)}
    for i in range(2):
        block = f"blocks.{i}."
        for norm in ("ln1", "ln2", "att.ln_x"):
            weights[f"{block}{norm}.weight"], weights[f"{block}{norm}.bias"] = torch.ones(hidden), torch.zeros(hidden)
        weights.update({f"{block}att.time_decay": torch.randn(1, hidden), f"{block}att.time_faaaa": torch.randn(1, 1)})
        for mix in ("att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "att.time_mix_g", "ffn.time_mix_k",
                    "ffn.time_mix_r"):
            weights[block + mix] = torch.rand(1, 1, hidden)
        for linear in ("att.key", "att.value", "att.receptance", "att.output", "att.gate", "ffn.receptance"):
            weights[f"{block}{linear}.weight"] = torch.randn(hidden, hidden)
        weights[f"{block}ffn.key.weight"] = torch.randn(4 * hidden, hidden)
        weights[f"{block}ffn.value.weight"] = torch.randn(hidden, 4 * hidden)
    weights.update({"ln_out.weight": torch.ones(hidden), "ln_out.bias": torch.zeros(hidden),
                    "head.weight": torch.randn(vocab, hidden)})
    path = tmp_path / "RWKV-5-World-tiny.pth"
    torch.save(weights, path)
    config = tmp_path / "rwkv"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({
        "model_type": "rwkv", "architectures": ["RwkvForCausalLM"], "vocab_size": vocab, "hidden_size": hidden,
        "num_hidden_layers": 2, "attention_hidden_size": hidden, "intermediate_size": 4 * hidden,
        "context_length": 16}))
    code, data = run_json("diff-keys", str(path), "--model-class", "RwkvForCausalLM", "--config", str(config))
    assert code == 1 and data["total_a"] == len(weights), data
    assert any("att.ln_x" in entry["name"] for entry in data["unexpected"]), data["unexpected"]
    notes = " ".join(data["notes"])
    assert "RWKV-4 layout" not in notes and "convert_rwkv_checkpoint_to_hf.py" not in notes, data["notes"]


def test_check_dtype_local_says_in_one_line_why_transformers_cannot_read_an_inert_global(tmp_path: Path) -> None:
    """A TransformerEngine .bin that inspect calls safe: transformers' dtype resolver reads it with
    torch.load(weights_only=True), which refuses _io.BytesIO. The reason given was torch's twenty lines of advice,
    ANSI escapes and "re-running torch.load with weights_only set to False will likely succeed" included."""
    import json

    folder = tmp_path / "te-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    torch.manual_seed(0)
    torch.save({"h.0.mlp.weight": torch.randn(4, 4), "h.0.mlp._extra_state": io.BytesIO(b"fp8")},
               folder / "pytorch_model.bin")
    code, report = run_json("check-dtype", str(folder), "--local")
    assert code == 0, report
    reason = report["local"]["auto_dtype"]["reason"]
    assert report["local"]["auto_dtype"]["dtype"] is None
    assert reason == ("transformers cannot resolve dtype='auto' here: torch's weights_only loader refuses to "
                      "unpickle _io.BytesIO; the file holds more than weights (from_pretrained reads the file "
                      "with that loader and fails the same way)"), reason


class _RunsAShellCommand:
    """Pickled as a call to os.system (never unpickled here: the test only writes it)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("echo the nested pickle ran",)


def _te_buffer(state: object) -> io.BytesIO:
    """What TransformerEngine's get_extra_state returned before 1.x: torch.save of its FP8 state into a BytesIO."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer


def test_a_pickle_inside_an_extra_state_buffer_is_scanned_too(tmp_path: Path) -> None:
    """TE's set_extra_state torch.loads the buffer when the model loads the state dict: a buffer whose pickle calls
    os.system was read as inert data and the file called safe."""
    torch.manual_seed(0)
    genuine = {"layers.0.fc1.weight": torch.randn(4, 4),
               "layers.0.fc1._extra_state": _te_buffer({"scale_fwd": torch.ones(3), "amax_history_fwd": torch.zeros(
                   4, 3), "extra_fp8_variables": {"num_gemms": 1, "fp8_checkpoint": True}}),
               "layers.0.attn._extra_state": _te_buffer(None),
               # inert names inside a buffer build harmlessly wherever it is loaded: not refused
               "layers.0.fc2._extra_state": _te_buffer({"args": argparse.Namespace(lr=1.0), "inner": io.BytesIO(b"x")})}
    good = tmp_path / "model_optim_rng.pt"
    torch.save({"model": genuine, "iteration": 1}, good)
    code, report = run_json("inspect", str(good))
    assert code == 0, report
    assert report["security"]["verdict"] == "safe" and [t["name"] for t in report["tensors"]] == [
        "layers.0.fc1.weight"]

    hostile = dict(genuine, **{"layers.0.fc1._extra_state": _te_buffer({"scale_fwd": torch.ones(3),
                                                                        "x": _RunsAShellCommand()})})
    bad = tmp_path / "hostile.pt"
    torch.save({"model": hostile, "iteration": 1}, bad)
    for command in (("inspect", str(bad)), ("convert", str(bad), "-o", str(tmp_path / "out.safetensors"))):
        result = run_cli(*command)
        assert result.exit_code == 2 and result.stdout == "", (command, result.stdout)
        assert result.stderr.startswith(f"error: {bad}: dangerous: the io.BytesIO at model.layers.0.fc1._extra_state "
                                        "holds a pickle that names posix.system"), result.stderr
        assert "\n" not in result.stderr.strip(), result.stderr
    assert not (tmp_path / "out.safetensors").exists()
