"""review81: convert, shard and check-dtype held to safetensors, torch.load, from_pretrained, huggingface_hub's split
and float64 counts of torch's casts.

Found: a sharded output's index recorded `total_parameters` as every value written, buffers included, where transformers
5's save_pretrained records `model.num_parameters()` (nn.Parameters only): a tiny BART (its persistent
`final_logits_bias`) said 29,028 for save_pretrained's 28,928, a tiny ResNet (BatchNorm's running statistics) 1,911 for
1,783, while the README promised the metadata "as transformers 5 writes them".

What held (run against the oracles, not kept as tests where older tests already hold it): convert .bin -> safetensors of
gpt2, llama (tied and not), t5, bart, bert loaded by from_pretrained with nothing missing or unexpected and every tensor
equal; shard --max 20KB of the same gave save_pretrained's file names, weight_map and total_size; --format bin shards
gave save_torch_state_dict's map and total_size at 20KB, 13KB and 1KB (tied names kept in one shard); slices, a
transposed view, an expand()ed tensor, 0-dim, empty, bool, int8/uint8/int32/int64, complex64, fp8 e4m3/e5m2 and float64
tensors of a .bin read back equal by load_file (ints, bool, complex and fp8 untouched by --dtype bf16/fp16) and back to
.bin bit-exact; check-dtype's per-tensor overflow, clamped, underflow, subnormal, changed and max relative error equal
to torch's casts counted in float64 for fp16, bf16, fp8_e4m3 and fp32 over planted edge values; the 1% underflow line
(unsafe at exactly 1.0%, lossy below) agrees between check-dtype and convert; a read-only mount, a full tmpfs, a
tmpfs with room for the tensors but not the headers, `ulimit -f` and SIGKILL mid-write left nothing under the final
name.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT, run_cli, run_json


def _sharded_like_save_pretrained(tmp_path: Path, model: torch.nn.Module) -> tuple[dict, dict]:
    """The index save_pretrained writes at 5KB shards, and the one `shard --max 5KB` writes for the model's .bin."""
    model.save_pretrained(tmp_path / "reference", max_shard_size="5KB")
    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    shutil.copy(tmp_path / "reference" / "config.json", tmp_path / "bin")
    code, data = run_json("shard", str(tmp_path / "bin"), "--max", "5KB", "-o", str(tmp_path / "ours"))
    assert code == 0, data
    reference = json.loads((tmp_path / "reference" / "model.safetensors.index.json").read_text())
    ours = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    return reference, ours


def _tiny_bart() -> torch.nn.Module:
    import transformers

    return transformers.BartForConditionalGeneration(transformers.BartConfig(
        encoder_layers=1, decoder_layers=1, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, vocab_size=100, max_position_embeddings=64))


def _tiny_resnet() -> torch.nn.Module:
    import transformers

    return transformers.ResNetForImageClassification(
        transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3))


@pytest.mark.parametrize("build", [_tiny_bart, _tiny_resnet], ids=["bart-buffer", "resnet-batchnorm"])
def test_the_index_counts_parameters_as_save_pretrained_does(tmp_path: Path, build) -> None:
    """BART's persistent `final_logits_bias` and ResNet's BatchNorm running statistics are saved, loaded, and not
    parameters: transformers' index leaves them out of `total_parameters`, and so does the shard's index now."""
    torch.manual_seed(0)
    model = build()
    reference, ours = _sharded_like_save_pretrained(tmp_path, model)
    buffers = sum(b.numel() for name, b in model.named_buffers() if name in model.state_dict())
    assert buffers > 0  # the case is one where buffers and parameters differ
    assert reference["metadata"]["total_parameters"] == model.num_parameters()
    assert ours["metadata"]["total_parameters"] == reference["metadata"]["total_parameters"]
    assert ours["metadata"]["total_size"] == reference["metadata"]["total_size"]
    assert ours["weight_map"] == reference["weight_map"]


def _in_a_read_only_mount(folder: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    """`weightdoctor ARGS` run where `folder` is a read-only tmpfs (a private mount namespace, so nothing outside
    sees it); None where this system lets no process make one (no unshare, no user namespaces)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    folder.mkdir()
    command = (f"mount -t tmpfs -o ro tmpfs {shlex.quote(str(folder))} && exec {shlex.quote(sys.executable)} -m "
               f"weightdoctor {shlex.join(args)}")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    probe = subprocess.run([unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {shlex.quote(str(folder))}"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return None
    return subprocess.run([unshare, "-rm", "sh", "-c", command], capture_output=True, text=True, env=env,
                          check=False)


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_a_dry_run_into_a_read_only_mount_says_read_only_as_the_write_does(tmp_path: Path, command: str) -> None:
    """access() refuses a folder on a read-only mount as it refuses one without permission, root included: the
    dry run said "permission denied" where the write itself says "read-only file system"."""
    torch.save({"w": torch.arange(12, dtype=torch.float32)}, tmp_path / "m.bin")
    output = tmp_path / "ro" / ("out.safetensors" if command == "convert" else "out")
    sizing = ["--max", "1GB"] if command == "shard" else []
    dry = _in_a_read_only_mount(tmp_path / "ro", command, str(tmp_path / "m.bin"), "-o", str(output), *sizing,
                                "--dry-run", "--json")
    if dry is None:
        pytest.skip("no private read-only mount can be made here (unshare -rm)")
    assert dry.returncode == 1, dry.stderr
    assert json.loads(dry.stdout)["would_refuse"] == f"{output}: cannot write the output: read-only file system"
    written = _in_a_read_only_mount(tmp_path / "ro2", command, str(tmp_path / "m.bin"), "-o",
                                    str(tmp_path / "ro2" / output.name), *sizing)
    assert written is not None and written.returncode == 2
    assert "cannot write the output: read-only file system" in written.stderr


def test_a_carried_total_parameters_never_replaces_the_count_written(tmp_path: Path) -> None:
    """A source header's own `total_parameters` (a string, as every safetensors metadata value is) stood in the
    index for the count written, and `--metadata total_parameters=7` did the same, where `total_size` is always the
    bytes written: the index now always holds the integer save_pretrained would, and the option is refused as
    `total_size=` is."""
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(300, 300), "b": torch.zeros(300, 300)}, str(tmp_path / "m.safetensors"),
              metadata={"format": "pt", "total_parameters": "5", "note": "kept"})
    code, data = run_json("shard", str(tmp_path / "m.safetensors"), "--max", "400KB", "-o", str(tmp_path / "out"))
    assert code == 0, data
    metadata = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())["metadata"]
    assert metadata == {"note": "kept", "total_size": 720_000, "total_parameters": 180_000}
    result = run_cli("shard", str(tmp_path / "m.safetensors"), "--max", "400KB", "-o", str(tmp_path / "other"),
                     "--metadata", "total_parameters=7")
    assert result.exit_code == 2 and "total_parameters=... is reserved" in result.stderr
    assert not (tmp_path / "other").exists()


def test_a_tensor_just_over_max_is_said_in_bytes(tmp_path: Path) -> None:
    """A 4,004-byte tensor under `--max 4KB` was said to be "4.00 KB ... larger than --max 4KB"; huggingface_hub's
    split gives it a shard of its own all the same (the plan is checked against it)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    state = {"a": torch.zeros(1000), "big": torch.zeros(1001), "c": torch.zeros(10)}
    torch.save(state, tmp_path / "m.bin")
    result = run_cli("shard", str(tmp_path / "m.bin"), "--max", "4KB", "-o", str(tmp_path / "out"), "--dry-run",
                     "--json")
    assert result.exit_code == 0, result.stderr
    assert "big (4,004 bytes) is larger than --max 4KB" in result.stderr
    split = split_torch_state_dict_into_shards(state, max_shard_size="4KB")
    planned = [s["num_tensors"] for s in json.loads(result.stdout)["plan"]["shards"]]
    assert planned == [len(names) for names in split.filename_to_tensors.values()] == [1, 1, 1]
