"""The writers under attack (redteam 22): an output folder replaced with --force that held another model's save."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli, run_json, save_tiny_bert


def _unet(folder: Path, seed: int) -> dict[str, torch.Tensor]:
    """A tiny diffusers-style model folder: config.json naming its class, one diffusion_pytorch_model.safetensors."""
    torch.manual_seed(seed)
    tensors = {"conv_in.weight": torch.randn(8, 4, 3, 3), "conv_out.weight": torch.randn(4, 8, 3, 3)}
    folder.mkdir()
    save_file(tensors, folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "_diffusers_version": "0.30.0"}))
    return tensors


def test_force_over_a_diffusers_folder_of_shards_drops_the_old_shards_and_index(tmp_path: Path) -> None:
    """diffusers' from_pretrained reads an index before the single file: the earlier save's shards and index, kept
    ("kept" in the report) beside the new diffusion_pytorch_model.safetensors, were what loaded, and what weightdoctor
    itself read from the output folder afterwards."""
    new = _unet(tmp_path / "unet", seed=1)
    old = _unet(tmp_path / "old", seed=2)
    dest = tmp_path / "dest"
    code, report = run_json("shard", str(tmp_path / "old"), "-o", str(dest), "--max", "1KB")
    assert code == 0 and report["plan"]["index"] == "diffusion_pytorch_model.safetensors.index.json"
    (dest / "README.md").write_text("notes\n")
    stale = sorted(p.name for p in dest.glob("diffusion_pytorch_model*"))
    assert len(stale) == 3, stale

    code, report = run_json("convert", str(tmp_path / "unet"), "-o", str(dest), "--force")
    assert code == 0, report
    assert sorted(report["write"]["replaced"]) == stale
    assert report["write"]["carried_over"] == ["README.md"]
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    written = load_file(dest / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(written[k], new[k]) and not torch.equal(written[k], old[k]) for k in new)
    # What weightdoctor reads from the folder now is the new file, not the old index.
    code, inspected = run_json("inspect", str(dest))
    assert code == 0
    assert [f["path"] for f in inspected["files"] if f["role"] != "config"] == ["diffusion_pytorch_model.safetensors"]
    # And the report a user reads says so.
    (tmp_path / "again").mkdir()
    result = run_cli("shard", str(tmp_path / "old"), "-o", str(tmp_path / "again" / "d"), "--max", "1KB")
    assert result.exit_code == 0
    result = run_cli("convert", str(tmp_path / "unet"), "-o", str(tmp_path / "again" / "d"), "--force")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "replaced diffusion_pytorch_model-00001-of-00002.safetensors," in text, text
    assert "kept" not in text, text


def test_force_over_a_single_variant_file_then_from_pretrained_loads_the_new_shards(tmp_path: Path) -> None:
    """transformers' from_pretrained(variant="fp16") reads model.fp16.safetensors before the fp16 index: an earlier
    single-file save left beside new fp16 shards was the model that loaded."""
    import transformers

    source = tmp_path / "src"
    save_tiny_bert(source)
    model = transformers.BertForSequenceClassification.from_pretrained(source)
    model.half().save_pretrained(source, variant="fp16")
    (source / "model.safetensors").unlink()
    new = model.state_dict()
    dest = tmp_path / "dest"
    torch.manual_seed(7)
    other = transformers.BertForSequenceClassification(model.config)
    other.half().save_pretrained(dest, variant="fp16")
    assert (dest / "model.fp16.safetensors").is_file()

    code, report = run_json("shard", str(source), "-o", str(dest), "--max", "20KB", "--force")
    assert code == 0, report
    assert report["plan"]["index"] == "model.safetensors.index.fp16.json"
    assert "model.fp16.safetensors" in report["write"]["replaced"]
    assert not (dest / "model.fp16.safetensors").exists()
    loaded = transformers.BertForSequenceClassification.from_pretrained(dest, variant="fp16").state_dict()
    assert all(torch.equal(loaded[k], new[k]) for k in new)


def _data_offset(path: Path, member_suffix: str) -> int:
    """Where the bytes of a torch zip checkpoint's member (`data/3`) start in the file."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", handle.read(4))
    return info.header_offset + 30 + name_length + extra_length


def test_a_pickle_rewritten_in_place_while_cast_is_refused_not_written_as_a_mix(
    tmp_path: Path, monkeypatch: object
) -> None:
    """A torch zip checkpoint's values are read from a private map, whose pages not yet read show the file's new
    bytes: rewritten in place (same size) while `convert --dtype fp16` read it, the output held the old first
    tensors and the new last one, exit 0 and "verified". A safetensors source was refused so already."""
    import os

    from weightdoctor.writers import hooks

    torch.manual_seed(3)
    tensors = {f"layer.{i}.weight": torch.randn(64, 64) for i in range(4)}
    source = tmp_path / "m.bin"
    torch.save(tensors, source)
    offset = _data_offset(source, "/data/3")

    def rewrite_in_place(point: str) -> None:
        if point == "tensor-2":  # layer.0 and layer.1 are read; layer.3's bytes become zeros, the size kept
            fd = os.open(source, os.O_WRONLY)
            try:
                os.pwrite(fd, bytes(64 * 64 * 4), offset)
            finally:
                os.close(fd)

    monkeypatch.setattr(hooks, "reached", rewrite_in_place)  # type: ignore[attr-defined]
    output = tmp_path / "out" / "m.safetensors"
    output.parent.mkdir()
    result = run_cli("convert", str(source), "-o", str(output), "--dtype", "fp16")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and result.stdout == "", (result.stdout, result.stderr)
    # Read with preadv since redteam37 (no map): the rewrite is seen by the identity check before the next tensor
    # (its modification time changed), or by the check after the values were read; either refuses the whole file.
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}: the file changed "), lines
    assert ("nothing more is read from it" in lines[0] or "could mix old and new contents" in lines[0]), lines
    assert list(output.parent.iterdir()) == []  # no output, no temporary


def test_storage_shared_where_the_config_unties_it_is_written_not_dropped(tmp_path: Path) -> None:
    """A GPT-2 whose config says `tie_word_embeddings: false` but whose .bin holds lm_head.weight as the same storage
    as transformer.wte.weight: the safetensors output left lm_head.weight out (recorded in the metadata only), and
    from_pretrained, which ties nothing for this config, loaded it as new random weights."""
    import transformers

    torch.manual_seed(5)
    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32,
                                     tie_word_embeddings=False)
    state = transformers.GPT2LMHeadModel(config).state_dict()
    state["lm_head.weight"] = state["transformer.wte.weight"]
    source = tmp_path / "src"
    config.save_pretrained(source)
    torch.save(state, source / "pytorch_model.bin")

    for command in (["convert"], ["shard", "--max", "4KB"]):
        out = tmp_path / command[0]
        code, report = run_json(command[0], str(source), *command[1:], "-o", str(out))
        assert code == 0, report
        assert report["plan"]["dropped_aliases"] == []
        assert ("lm_head.weight = transformer.wte.weight share storage in the source, but config.json does not tie "
                "it (from_pretrained would load it as new random weights if left out): each is written as its own "
                "copy") in report["warnings"]
        loaded = transformers.GPT2LMHeadModel.from_pretrained(out).state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state), command

    # Tied in the config, the alias is still left out (from_pretrained ties it back), as before.
    config.tie_word_embeddings = True
    config.save_pretrained(source)
    code, report = run_json("convert", str(source), "-o", str(tmp_path / "tied"))
    assert code == 0
    assert report["plan"]["dropped_aliases"] == [{"name": "lm_head.weight", "kept": "transformer.wte.weight"}]
    assert sorted(load_file(tmp_path / "tied" / "model.safetensors")) == sorted(set(state) - {"lm_head.weight"})


def test_complex32_and_bits16_are_counted_at_their_size_and_convert_to_bin(tmp_path: Path) -> None:
    """complex32 (a pair of float16s) and bits16 were counted as one byte an element: inspect said 8 bytes for 32,
    and convert --to bin failed with "unexpected ValueError: tensor 'c' has 32 bytes, expected 8"."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "ComplexHalf support is experimental"
        tensors = {"c": torch.arange(8, dtype=torch.float16).view(torch.complex32).reshape(2, 2),
                   "b": torch.arange(4, dtype=torch.int16).view(torch.bits16)}
    source = tmp_path / "odd.bin"
    torch.save(tensors, source)
    code, inspected = run_json("inspect", str(source))
    assert code == 0 and inspected["total_bytes"] == 4 * 4 + 4 * 2, inspected["total_bytes"]
    out = tmp_path / "out.bin"
    code, report = run_json("convert", str(source), "-o", str(out))
    assert code == 0, report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = torch.load(out, weights_only=True)
    assert back["c"].dtype == torch.complex32 and torch.equal(back["c"].view(torch.float16),
                                                              tensors["c"].view(torch.float16))
    assert back["b"].dtype == torch.bits16 and torch.equal(back["b"].view(torch.int16), tensors["b"].view(torch.int16))


def test_a_dtype_safetensors_has_no_name_for_is_refused_naming_the_file(tmp_path: Path) -> None:
    """complex128 to safetensors: the error line was "safetensors cannot store tensor 'w' of dtype complex128", with
    no file named (every exit-2 line names the file)."""
    source = tmp_path / "c.bin"
    torch.save({"w": torch.zeros(2, dtype=torch.complex128), "ok": torch.ones(2)}, source)
    for command in (["convert", "-o", str(tmp_path / "c.safetensors")], ["shard", "-o", str(tmp_path / "s"),
                                                                           "--max", "1KB"]):
        result = run_cli(command[0], str(source), *command[1:])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and result.stdout == "" and len(lines) == 1, result.stderr
        assert lines[0] == (f"error: {source}: safetensors has no dtype for 1 tensor: w (complex128); nothing was "
                            "written (a .bin output, -o NAME.bin or --to bin, keeps them as torch.save does)"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.bin"]


def test_a_single_file_written_beside_an_earlier_save_of_its_set_is_warned(tmp_path: Path) -> None:
    """`convert x.safetensors -o unet/diffusion_pytorch_model.safetensors` into a folder holding an earlier save's
    shards and index wrote the file silently; diffusers (and weightdoctor) then read the old index, not it."""
    _unet(tmp_path / "unet", seed=1)
    _unet(tmp_path / "old", seed=2)
    dest = tmp_path / "dest"
    assert run_cli("shard", str(tmp_path / "old"), "-o", str(dest), "--max", "1KB").exit_code == 0
    out = dest / "diffusion_pytorch_model.safetensors"
    code, report = run_json("convert", str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"), "-o", str(out))
    assert code == 0
    assert (f"{dest} also holds diffusion_pytorch_model-00001-of-00002.safetensors, "
            "diffusion_pytorch_model-00002-of-00002.safetensors, diffusion_pytorch_model.safetensors.index.json, of "
            "the same weight set as diffusion_pytorch_model.safetensors (an earlier save): a loader may read them "
            "instead of it or beside it (diffusers' from_pretrained reads an index before the single file); remove "
            "them, or convert the model folder with --force, which replaces the whole set") in report["warnings"]
    # Another set in the folder (a PEFT adapter beside the model) is no reason to warn.
    save_file({"w": torch.ones(2)}, tmp_path / "adapter_model.safetensors")
    code, report = run_json("convert", str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"), "-o",
                            str(tmp_path / "model.safetensors"))
    assert code == 0 and not any("also holds" in w for w in report["warnings"]), report["warnings"]


def test_sigint_during_a_forced_shard_keeps_the_earlier_diffusers_save_whole(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT sent to the process) while shard --force rewrites a folder holding an earlier save of the same
    set: exit 130, the earlier save and its index untouched, nothing staged left beside it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import REPO_ROOT

    _unet(tmp_path / "unet", seed=1)
    _unet(tmp_path / "old", seed=2)
    dest = tmp_path / "dest"
    assert run_cli("shard", str(tmp_path / "old"), "-o", str(dest), "--max", "1KB").exit_code == 0
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    marker = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "WEIGHTDOCTOR_PAUSE_AT": "tensor-1",
           "WEIGHTDOCTOR_PAUSE_FILE": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "weightdoctor", "shard", str(tmp_path / "unet"), "-o", str(dest),
                             "--max", "1KB", "--force"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL) and None)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "old", "paused", "unet"]
