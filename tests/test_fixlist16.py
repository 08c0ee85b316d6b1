"""Fix list 16: DINOv2's student / teacher copies warned of, Depth Anything's converter named, Orbax's markers listed
as found, and the other small gaps of the list."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json

# 1. A DINOv2 training checkpoint: student.backbone.* beside teacher.backbone.*, counted twice without a word.

def _dinov2_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = {}
    for who in ("student", "teacher"):
        state[f"{who}.backbone.cls_token"] = torch.randn(1, 1, 8)
        state[f"{who}.backbone.blocks.0.attn.qkv.weight"] = torch.randn(24, 8)
        state[f"{who}.dino_head.last_layer.weight"] = torch.randn(16, 8)
    state["dino_loss.center"] = torch.zeros(1, 16)
    state["ibot_patch_loss.center"] = torch.zeros(1, 1, 16)
    return state


@pytest.mark.parametrize("wrapped", [True, False])
def test_a_dinov2_training_checkpoint_warns_that_the_backbone_is_stored_twice(tmp_path: Path, wrapped: bool) -> None:
    path = tmp_path / "model_0000099.pth"
    state = _dinov2_state()
    torch.save({"model": state, "optimizer": {}, "iteration": 99} if wrapped else state, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data is not None
    said = [w for w in data["warnings"] if "stored twice" in w]
    assert len(said) == 1, data["warnings"]
    assert said[0].startswith("the backbone is stored twice: student.backbone.* holds the student copy of 2 tensors "
                              "of teacher.backbone.* (200 parameters, counted in the total above)"), said
    assert "checkpoint_key 'teacher'" in said[0] and "--filter '^teacher\\.backbone\\.' counts it alone" in said[0]
    # The option it names works as said: the teacher's backbone alone.
    code, alone = run_json("inspect", str(path), "--filter", r"^teacher\.backbone\.")
    assert code == 0 and [t["name"] for t in alone["tensors"]] == ["teacher.backbone.cls_token",
                                                                   "teacher.backbone.blocks.0.attn.qkv.weight"]


def test_a_teacher_alone_is_not_warned_of(tmp_path: Path) -> None:
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save({k: v for k, v in _dinov2_state().items() if not k.startswith("student.")}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and not [w for w in data["warnings"] if "stored twice" in w], data["warnings"]


# 2. An original Depth Anything checkpoint against transformers' layout: the note named DINOv2's converter.

def test_a_depth_anything_checkpoint_names_its_own_converter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = {"pretrained.cls_token": torch.randn(1, 1, 8), "pretrained.blocks.0.attn.qkv.weight": torch.randn(24, 8),
         "pretrained.blocks.0.attn.qkv.bias": torch.randn(24), "pretrained.blocks.0.ls1.gamma": torch.randn(8),
         "depth_head.scratch.output_conv1.weight": torch.randn(4, 8, 3, 3)}
    b = {"backbone.embeddings.cls_token": torch.randn(1, 1, 8),
         "backbone.encoder.layer.0.layer_scale1.lambda1": torch.randn(8), "head.conv1.weight": torch.randn(4, 8, 3, 3)}
    for part in ("query", "key", "value"):
        b[f"backbone.encoder.layer.0.attention.attention.{part}.weight"] = torch.randn(8, 8)
        b[f"backbone.encoder.layer.0.attention.attention.{part}.bias"] = torch.randn(8)
    torch.save(a, tmp_path / "depth_anything_vits14.pth")
    save_file(b, tmp_path / "model.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "depth_anything_vits14.pth"), str(tmp_path / "model.safetensors"))
    assert data is not None, code
    note = next(n for n in data["notes"] if "qkv" in n)
    assert "models/depth_anything/convert_depth_anything_to_hf.py" in note, note
    assert "convert_dinov2_to_hf.py" not in note, note
    # Without the depth head it is a DINOv2 backbone, and DINOv2's converter is still the one named.
    del a["depth_head.scratch.output_conv1.weight"]
    torch.save(a, tmp_path / "dinov2_vits14.pth")
    _, plain = run_json("diff-keys", str(tmp_path / "dinov2_vits14.pth"), str(tmp_path / "model.safetensors"))
    assert "models/dinov2/convert_dinov2_to_hf.py" in next(n for n in plain["notes"] if "qkv" in n)


# 4. The Orbax message listed _CHECKPOINT_METADATA, _METADATA and manifest.ocdbt wherever it was.

def test_the_orbax_message_lists_the_markers_present(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    item = root / "1000" / "params"
    item.mkdir(parents=True)
    (root / "1000" / "_CHECKPOINT_METADATA").write_text(json.dumps({"item_handlers": {}}))
    (item / "_METADATA").write_text(json.dumps({"tree_metadata": {}}))
    (item / "_sharding").write_text("{}")
    expected = {root: "an Orbax (JAX) checkpoint (1000/_CHECKPOINT_METADATA)",
                root / "1000": "an Orbax (JAX) checkpoint (_CHECKPOINT_METADATA)",
                item: "an Orbax (JAX) checkpoint (_METADATA, _sharding)"}
    for source, words in expected.items():
        result = run_cli("inspect", str(source))
        text = " ".join(result.stderr.split())
        assert result.exit_code == 2 and words in text, (source, text)
        assert "manifest.ocdbt" not in text, text


# 5. A hypernetwork of 20,000 widths: every one listed on one line, and a --key that could not be typed.

def _network() -> dict[str, torch.Tensor]:
    return {"linear.0.weight": torch.zeros(2, 1)}


def test_a_hypernetwork_of_many_widths_lists_a_few_and_counts_the_rest(tmp_path: Path) -> None:
    shared = [_network(), _network()]
    obj: dict[object, object] = {width: shared for width in range(1000, 21000)}
    obj["layer_structure"] = [1, 2, 1]
    torch.save(obj, tmp_path / "hn.pt")
    result = run_cli("inspect", str(tmp_path / "hn.pt"))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2, result.stderr
    assert "(1000, 1001, 1002, 1003, 1004, 1005, and 19,994 more)" in line, line
    assert "--key 1000.0 reads one of them" in line and len(line) < 600, line


def test_a_hypernetwork_offers_no_key_that_cannot_be_typed(tmp_path: Path) -> None:
    # A negative width and one of 40 digits: `--key -5.0` and a 40-digit --key are not read as those int keys.
    torch.save({-5: [_network()], 10 ** 40: [{}, _network()], "layer_structure": [1, 2, 1]}, tmp_path / "odd.pt")
    line = " ".join(run_cli("inspect", str(tmp_path / "odd.pt")).stderr.split())
    assert "an AUTOMATIC1111 hypernetwork" in line and "--key" not in line, line
    torch.save({-5: [_network()], 768: [{}, _network()], "layer_structure": [1, 2, 1]}, tmp_path / "mixed.pt")
    line = " ".join(run_cli("inspect", str(tmp_path / "mixed.pt")).stderr.split())
    assert "--key 768.1 reads one of them" in line, line
    code, data = run_json("inspect", str(tmp_path / "mixed.pt"), "--key", "768.1")
    assert code == 0 and data["num_params"] == 2, data


# 6. A file's address at a mistyped ref: corrected to /blob/main/, then `hf download ... --revision mian`.

@pytest.mark.parametrize("address", ["https://huggingface.co/acme/tiny/blob/mian/model.safetensors",
                                     "hf://acme/tiny@mian/model.safetensors"])
def test_no_download_hint_names_a_mistyped_revision_the_message_corrects(tmp_path: Path, address: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    commit = "1" * 40
    repo = tmp_path / "hub" / "models--acme--tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file({"w": torch.zeros(4)}, str(repo / "snapshots" / commit / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", address)
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and result.stdout == "", result.stderr
    meant = address.replace("/mian/", "/main/").replace("@mian", "@main")
    # The corrected address reads from the cache: the message ends there, with no fetch of the mistyped ref.
    assert line.endswith(f"did you mean {meant} (cached)?"), line
    assert "--revision mian" not in line and "hf download" not in line, line
    # Of a ref the cache offers nothing close to, the fetch is still named.
    other = " ".join(run_cli("inspect", address.replace("mian", "v2")).stderr.split())
    assert other.endswith("`hf download acme/tiny model.safetensors --revision v2` fetches it"), other


# 3. A cached snapshot that is a FIFO: inspect named `snapshots/` as "the cached snapshot", plan-devices the entry.

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_snapshot_that_is_a_fifo_is_named_alike_by_every_command(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    commit = "b" * 40
    repo = tmp_path / "hub" / "models--org--fifo"
    (repo / "snapshots").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    os.mkfifo(repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = repo / "snapshots" / commit
    lines = {}
    for command in (["inspect"], ["plan-devices", "--gpu", "1GB"], ["check-dtype"]):
        result = run_cli(*command, "org/fifo")
        assert result.exit_code == 2 and result.stdout == "", (command, result.stderr)
        lines[command[0]] = " ".join(result.stderr.split())
    assert len(set(lines.values())) == 1, lines
    assert lines["inspect"].endswith(f"not a regular file (a FIFO); give a checkpoint file or folder (the cached "
                                     f"snapshot {snapshot})"), lines["inspect"]
    assert f"{commit}:" not in lines["inspect"], lines["inspect"]


# 8. One shard of a cached repo: its index named by the path deep in the Hub cache, not as the shard was typed.

@pytest.mark.parametrize("form", ["hf://org/sh@main/{}", "https://huggingface.co/org/sh/blob/main/{}"])
def test_the_index_of_a_cached_shard_is_named_as_the_shard_was_typed(tmp_path: Path, form: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    commit = "c" * 40
    repo = tmp_path / "hub" / "models--org--sh"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file({"a": torch.zeros(2)}, str(snapshot / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(2)}, str(snapshot / "model-00002-of-00002.safetensors"))
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                        "b": "model-00002-of-00002.safetensors"}}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, data = run_json("inspect", form.format("model-00001-of-00002.safetensors"))
    assert code == 0 and data is not None
    index = form.format("model.safetensors.index.json")
    said = [w for w in data["warnings"] if "is shard 1 of 2" in w]
    assert said == [f"model-00001-of-00002.safetensors is shard 1 of 2: only its own tensors are read; its index "
                    f"{index} (or the folder) reads the whole checkpoint"], data["warnings"]
    # The index named reads the whole checkpoint.
    code, whole = run_json("inspect", index)
    assert code == 0 and whole["num_tensors"] == 2, whole
