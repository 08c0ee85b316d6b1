"""The shared checkpoint reader over every source kind, on real fixture files."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT, run_cli, run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.errors import CorruptCheckpoint, InvalidIndex, SourceNotFound, UnsafePickle, UsageError

BERT_TENSORS = 41
BERT_PARAMS = 20077


@pytest.mark.parametrize(
    "name, fmt, sharded",
    [
        ("bert", "safetensors", False),
        ("bert-bin", "pytorch-zip", False),
        ("bert-sharded", "safetensors", True),
        ("bert-sharded-bin", "pytorch-zip", True),
    ],
)
def test_model_folders(fx: dict[str, Path], name: str, fmt: str, sharded: bool) -> None:
    ckpt = open_checkpoint(fx[name])
    assert (ckpt.format, ckpt.sharded) == (fmt, sharded)
    assert len(ckpt.tensors) == BERT_TENSORS and ckpt.num_params == BERT_PARAMS
    assert ckpt.config is not None and ckpt.config["model_type"] == "bert"
    info = ckpt.tensor_info("bert.embeddings.word_embeddings.weight")
    assert info.shape == (99, 32) and info.dtype == "float32" and info.nbytes == 99 * 32 * 4


def test_all_sources_give_identical_values(fx: dict[str, Path]) -> None:
    reference = open_checkpoint(fx["files"] / "bert.safetensors")
    for source in [fx["bert-bin"], fx["bert-sharded"], fx["bert-sharded-bin"], fx["files"] / "bert.bin",
                   fx["files"] / "bert-legacy.bin"]:
        other = open_checkpoint(source)
        assert {t.name for t in other.tensors} == {t.name for t in reference.tensors}, source
        for info in reference.tensors:
            assert torch.equal(other.load_tensor(info.name), reference.load_tensor(info.name)), (source, info.name)


def test_legacy_format(fx: dict[str, Path]) -> None:
    ckpt = open_checkpoint(fx["files"] / "bert-legacy.bin")
    assert ckpt.format == "pytorch-legacy" and len(ckpt.tensors) == BERT_TENSORS


def test_training_checkpoint_found_and_other_entries_listed(fx: dict[str, Path]) -> None:
    ckpt = open_checkpoint(fx["files"] / "training.pt")
    assert ckpt.nested_key == "model_state_dict"
    assert any(e.startswith("epoch") for e in ckpt.other_entries)
    assert any(e.startswith("optimizer_state_dict") for e in ckpt.other_entries)
    assert len(ckpt.tensors) == BERT_TENSORS


def test_nested_key_explicit_and_automatic(fx: dict[str, Path]) -> None:
    auto = open_checkpoint(fx["files"] / "ddp-nested.pth")
    assert auto.nested_key == "model.module"
    assert auto.tensors[0].name.startswith("module.")
    explicit = open_checkpoint(fx["files"] / "ddp-nested.pth", key="model.module")
    assert len(explicit.tensors) == BERT_TENSORS
    with pytest.raises(UsageError, match="no entry 'nope'"):
        open_checkpoint(fx["files"] / "ddp-nested.pth", key="model.nope")


def test_tied_weights_share_storage(fx: dict[str, Path]) -> None:
    ckpt = open_checkpoint(fx["files"] / "gpt2-tied.bin")
    assert ["transformer.wte.weight", "lm_head.weight"] in ckpt.shared_groups()
    # Shared storage is counted once.
    assert ckpt.total_bytes == sum(t.nbytes for t in ckpt.tensors) - ckpt.tensor_info("lm_head.weight").nbytes


def test_repo_id_from_cache(fx: dict[str, Path], hub_env: Path) -> None:
    ckpt = open_checkpoint("weightdoctor-tests/tiny-bert")
    assert ckpt.repo_id == "weightdoctor-tests/tiny-bert" and ckpt.num_params == BERT_PARAMS
    assert "snapshots" in str(ckpt.path)
    gpt2 = open_checkpoint("tiny-gpt2")
    assert gpt2.config["model_type"] == "gpt2"


def test_a_ref_moved_to_a_config_only_snapshot_names_the_cached_revisions_with_weights(
    fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AutoConfig.from_pretrained after the repo changed moves refs/main to a commit holding only config.json;
    offline, from_pretrained fails and so do we, but the weights of the tagged earlier commit are in the cache:
    the error now names it and the --revision that reads it."""
    import shutil

    from fixtures.build import write_hub_cache
    from weightdoctor.errors import SourceNotFound

    cache = tmp_path / "hub"
    old = write_hub_cache(cache, "org/tiny-bert", fx["bert"], revision="v1")
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copyfile(fx["bert"] / "config.json", config_only / "config.json")
    new = write_hub_cache(cache, "org/tiny-bert", config_only, revision="main")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceNotFound) as info:
        open_checkpoint("org/tiny-bert")
    assert f"other cached revisions hold weights: {old.name[:12]} (v1): read one with --revision v1 (the cached " \
        f"snapshot {new})" in str(info.value.message)
    assert open_checkpoint("org/tiny-bert", revision="v1").num_params == BERT_PARAMS


def test_hub_cache_folder_as_a_path(fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `~/.cache/huggingface/hub/models--org--name` pasted as a path: the snapshot its refs/main names is read.
    from fixtures.build import write_hub_cache

    cache = tmp_path / "hub"
    snapshot = write_hub_cache(cache, "org/tiny-bert", fx["bert"])
    folder = cache / "models--org--tiny-bert"
    ckpt = open_checkpoint(folder)
    assert ckpt.path == snapshot and ckpt.num_params == BERT_PARAMS
    assert any("Hub cache folder" in w and snapshot.name[:10] in w for w in ckpt.warnings)
    # `.` from inside the cache folder, and a link to it, are that folder too (their names are not models--...).
    monkeypatch.chdir(folder)
    assert open_checkpoint(".").path.resolve() == snapshot.resolve()
    (tmp_path / "tiny-bert").symlink_to(folder)
    assert open_checkpoint(tmp_path / "tiny-bert").num_params == BERT_PARAMS

    # A second revision: --revision picks it by ref or by commit prefix; no revision still means refs/main.
    other = write_hub_cache(cache, "org/tiny-bert", fx["gpt2"], revision="v2")
    assert open_checkpoint(folder, revision="v2").path == other
    assert open_checkpoint(folder, revision=other.name[:8]).config["model_type"] == "gpt2"
    assert open_checkpoint(folder).path == snapshot
    with pytest.raises(SourceNotFound, match=r"no snapshot for revision v3.*'org/tiny-bert'"):
        open_checkpoint(folder, revision="v3")

    # Without refs/main and with two snapshots there is no telling which one is meant.
    (folder / "refs" / "main").unlink()
    with pytest.raises(SourceNotFound, match="no snapshot for refs/main; its snapshots: "):
        open_checkpoint(folder)
    # A "ref" of 5,000 bytes is not a commit hash and is not read.
    (folder / "refs" / "main").write_text(snapshot.name + " " * 5000)
    with pytest.raises(SourceNotFound, match="no snapshot for refs/main; its snapshots: "):
        open_checkpoint(folder)
    # A ref that holds a path is no snapshot name (nothing outside snapshots/ is read).
    (folder / "refs" / "main").write_text("../../elsewhere")
    with pytest.raises(SourceNotFound, match="names '../../elsewhere', not a snapshot here"):
        open_checkpoint(folder)


def test_repo_id_missing_offline(hub_env: Path) -> None:
    with pytest.raises(SourceNotFound, match="HF_HUB_OFFLINE"):
        open_checkpoint("nobody/nothing")


def test_index_json_directly(fx: dict[str, Path]) -> None:
    ckpt = open_checkpoint(fx["bert-sharded"] / "model.safetensors.index.json")
    assert ckpt.sharded and len(ckpt.weight_files) == 3 and ckpt.config is not None


def test_index_naming_missing_shard(fx: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for item in fx["bert-sharded"].iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(InvalidIndex, match="model-00002-of-00003.safetensors"):
        open_checkpoint(folder)


def _write_fake_safetensors(path: Path, header: dict, data_len: int) -> None:
    raw = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + data_len)  # sparse: no data is written


def test_truncated_safetensors(fx: dict[str, Path], tmp_path: Path) -> None:
    data = (fx["files"] / "bert.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpoint, match="truncated"):
        open_checkpoint(cut)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02")
    with pytest.raises(CorruptCheckpoint, match="too short"):
        open_checkpoint(tiny)


def test_duplicate_key_in_header(tmp_path: Path) -> None:
    raw = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(CorruptCheckpoint, match="twice"):
        open_checkpoint(path)


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(Exception, match="not a safetensors file nor a PyTorch pickle"):
        open_checkpoint(path)


def test_zip_without_records(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "empty.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/version", "3")
    with pytest.raises(CorruptCheckpoint, match="data.pkl"):
        open_checkpoint(path)


def test_pickle_refused_by_weights_only(tmp_path: Path) -> None:
    """An unknown class is refused; fairseq's argparse.Namespace is read as an inert stand-in."""
    import argparse
    import collections

    path = tmp_path / "chain.pt"
    torch.save({"args": collections.ChainMap({"lr": 1}), "state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(UnsafePickle, match="collections.ChainMap"):
        open_checkpoint(path)
    path = tmp_path / "args.pt"
    torch.save({"args": argparse.Namespace(lr=1), "state_dict": {"w": torch.zeros(2)}}, path)
    checkpoint = open_checkpoint(path)
    assert [t.name for t in checkpoint.tensors] == ["w"] and checkpoint.security.verdict == "safe"


def test_header_only_on_huge_sparse_file(tmp_path: Path) -> None:
    """Structure of a safetensors file costs its header: an 8 GB sparse file reads in kilobytes."""
    numel = 2 * 1024**3  # 8 GB of float32, never written
    path = tmp_path / "huge.safetensors"
    header = {"__metadata__": {"format": "pt"},
              "big": {"dtype": "F32", "shape": [numel // 1024, 1024], "data_offsets": [0, numel * 4]}}
    _write_fake_safetensors(path, header, numel * 4)
    small = tmp_path / "small.safetensors"
    _write_fake_safetensors(small, {"__metadata__": {"format": "pt"},
                                    "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 8)
    script = (
        "import sys\n"
        "from weightdoctor.checkpoint import open_checkpoint\n"
        "from weightdoctor.structure import inspect_checkpoint\n"
        "def rchar():\n"
        "    return int([l for l in open('/proc/self/io') if l.startswith('rchar')][0].split()[1])\n"
        f"inspect_checkpoint(open_checkpoint({str(small)!r}))  # warm up on another file: imports read files too\n"
        f"before = rchar(); report = inspect_checkpoint(open_checkpoint({str(path)!r})); after = rchar()\n"
        "print(report.num_params, after - before, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    params, read_bytes, torch_loaded, transformers_loaded = out.stdout.split()
    assert int(params) == numel
    assert int(read_bytes) < 200_000, f"read {read_bytes} bytes for structure"
    assert torch_loaded == "False" and transformers_loaded == "False"


def test_revision_with_a_local_path_is_named_not_silently_ignored() -> None:
    from tests.helpers import REPO_ROOT

    checkpoint = open_checkpoint(REPO_ROOT / "fixtures" / "example", revision="v1")
    assert checkpoint.revision is None
    assert any("--revision v1 ignored" in w and "local path" in w for w in checkpoint.warnings)


def test_a_fifo_or_a_device_is_refused_at_once_not_read(tmp_path: Path) -> None:
    """Reading a FIFO waits for a writer forever; /dev/zero is no empty file."""
    import os

    from tests.helpers import run_cli

    fifo = tmp_path / "model.bin"
    os.mkfifo(fifo)
    index = tmp_path / "model.safetensors.index.json"
    os.mkfifo(index)
    for source, kind in ((fifo, "a FIFO"), (index, "a FIFO"), (Path("/dev/zero"), "a device")):
        result = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(source)], capture_output=True,
                                text=True, timeout=60, cwd=REPO_ROOT)
        assert result.returncode == 2, result.stderr
        assert f"not a regular file ({kind})" in result.stderr
    assert run_cli("diff-keys", str(fifo), str(fifo)).exit_code == 2


def test_an_empty_source_is_not_the_current_folder(fx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import run_cli

    monkeypatch.chdir(fx["bert"])  # a model folder: "" once meant this one
    for args in (["inspect", ""], ["diff-keys", "", "."], ["convert", "", "-o", "/nonexistent/x.safetensors"]):
        result = run_cli(*args)
        assert result.exit_code == 2 and "the source is an empty string" in result.stderr, (args, result.stderr)


def test_a_folder_is_read_in_from_pretrained_order_and_says_what_it_ignores(tmp_path: Path) -> None:
    """model.safetensors before its sharded index (transformers' order), with a warning naming the other."""
    from safetensors.torch import save_file

    save_file({"new.w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    save_file({"old.w": torch.ones(2)}, str(tmp_path / "model-00001-of-00001.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 8}, "weight_map": {"old.w": "model-00001-of-00001.safetensors"}}))
    checkpoint = open_checkpoint(tmp_path)
    assert [t.name for t in checkpoint.tensors] == ["new.w"]
    assert checkpoint.warnings == [
        "model.safetensors.index.json is ignored: model.safetensors comes first, as from_pretrained chooses"]
    (tmp_path / "model.safetensors").unlink()
    assert [t.name for t in open_checkpoint(tmp_path).tensors] == ["old.w"]


def test_an_index_with_an_empty_weight_map_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from weightdoctor.errors import InvalidIndex

    save_file({"w": torch.ones(2)}, str(tmp_path / "model-00001-of-00001.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {}}))
    with pytest.raises(InvalidIndex, match="empty 'weight_map'"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a": ' + "9" * 5000 + "}"])
def test_json_that_json_loads_chokes_on_is_a_corrupt_file(tmp_path: Path, text: str) -> None:
    """Deep nesting (RecursionError) and integers past Python's digit limit (ValueError) in an index, a config
    and a safetensors header: one line each, never an "unexpected" error."""
    from tests.helpers import run_cli

    index = tmp_path / "model.safetensors.index.json"
    index.write_text(text)
    header = ('{"x": ' + text + "}").encode()  # a header must start with "{"
    header += b" " * (-len(header) % 8)
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    for source in (index, tmp_path / "bad.safetensors"):
        result = run_cli("inspect", str(source))
        assert result.exit_code == 2 and "unexpected" not in result.stderr, result.stderr
        assert "not valid JSON" in result.stderr
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "config.json").write_text(text)
    result = run_cli("plan-devices", str(config), "--gpu", "1GB")
    assert result.exit_code == 2 and "unexpected" not in result.stderr, result.stderr


def test_a_config_nested_past_the_limit_is_refused_before_anything_walks_it(tmp_path: Path) -> None:
    """700 levels pass json.loads but broke the JSON rendering of `inspect --json` (RecursionError)."""
    from safetensors.torch import save_file

    from tests.helpers import run_cli

    save_file({"w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text('{"model_type": "bert", "x": ' + "[" * 700 + "]" * 700 + "}")
    result = run_cli("inspect", str(tmp_path), "--json")
    assert result.exit_code == 2 and "nested more than 64 levels deep" in result.stderr, result.stderr


def test_a_huge_integer_beside_the_state_dict_is_described_not_printed(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.ones(2)}, "big": 10 ** 6000}, path)
    checkpoint = open_checkpoint(path)
    assert checkpoint.other_entries == ["big (int of 19,932 bits)"]


def test_a_diffusers_folder_reads_the_plain_file_not_its_variants(tmp_path: Path) -> None:
    """diffusers and transformers save `variant="fp16"` beside the plain file; from_pretrained reads the plain one."""
    import torch
    from safetensors.torch import save_file

    unet = tmp_path / "unet"
    unet.mkdir()
    save_file({"conv.weight": torch.ones(2, 2)}, str(unet / "diffusion_pytorch_model.safetensors"))
    save_file({"conv.weight": torch.ones(2, 2, dtype=torch.float16)},
              str(unet / "diffusion_pytorch_model.fp16.safetensors"))
    checkpoint = open_checkpoint(unet)
    assert [f.relpath for f in checkpoint.files if f.role == "weights"] == ["diffusion_pytorch_model.safetensors"]
    assert checkpoint.tensors[0].dtype == "float32"
    assert any("diffusion_pytorch_model.fp16.safetensors ignored: variants of" in w for w in checkpoint.warnings)


def test_a_folder_inside_a_cached_repo_is_named_org_name_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A diffusers pipeline repo keeps each model in a subfolder: `org/pipe/unet` reads it from the cache, and
    the repo's root says so in those words."""
    from safetensors.torch import save_file

    from fixtures.build import write_hub_cache

    files = tmp_path / "files"
    (files / "unet").mkdir(parents=True)
    (files / "text_encoder").mkdir()
    (files / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3)}, files / "unet" / "diffusion_pytorch_model.safetensors")
    (files / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    save_file({"embeddings.weight": torch.zeros(10, 4)}, files / "text_encoder" / "model.safetensors")
    write_hub_cache(tmp_path / "hub", "org/pipe", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unet = open_checkpoint("org/pipe/unet")
    assert [t.name for t in unet.tensors] == ["conv_in.weight"] and unet.repo_id == "org/pipe"
    assert unet.config == {"_class_name": "UNet2DConditionModel"}
    result = run_cli("inspect", "org/pipe")
    assert result.exit_code == 2
    assert "weights are in subfolders (text_encoder/, unet/): point at one, e.g. org/pipe/text_encoder" in \
        " ".join(result.stderr.split())
    result = run_cli("inspect", "org/pipe/vae")
    assert result.exit_code == 2 and "org/pipe has no folder vae" in result.stderr
    # Named by the repo id it was reached by, not by its cache path, in every command.
    result = run_cli("plan-devices", "org/pipe", "--gpu", "1GB")
    assert result.exit_code == 2 and "e.g. org/pipe/text_encoder" in " ".join(result.stderr.split())
    assert result.stderr.startswith("error: org/pipe: ")
    (files / "empty").mkdir()
    (files / "empty" / "config.json").write_text("{}")
    write_hub_cache(tmp_path / "hub", "org/config-only", files / "empty")
    result = run_cli("inspect", "org/config-only")
    assert result.exit_code == 2 and result.stderr.startswith("error: org/config-only: folder holds no weight file")
    write_hub_cache(tmp_path / "hub", "org/unet", files / "unet")
    assert run_json("inspect", "org/pipe/unet/")[0] == 0 and run_json("inspect", "org/unet/")[0] == 0
    # --config takes a repo's folder as SOURCE does.
    bert_folder = files / "text_encoder"
    (bert_folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10, "hidden_size": 4,
                                                          "num_hidden_layers": 1, "num_attention_heads": 1,
                                                          "intermediate_size": 8}))
    write_hub_cache(tmp_path / "hub", "org/pipe2", files)
    code, data = run_json("diff-keys", str(bert_folder), "--model-class", "BertModel",
                          "--config", "org/pipe2/text_encoder")
    assert code in (0, 1) and data["source_b"].startswith("BertModel"), data
    # A mistyped deep local path is named as typed, not as the repo id its first two parts would be.
    result = run_cli("inspect", "runs/exp1/final/weights")
    assert result.exit_code == 2 and "'runs/exp1/final/weights' is not a local path, nor folder" in result.stderr
    assert run_cli("inspect", "org/pipe/unet\n").exit_code == 2  # not the repo's folder: a name with a newline
    # A snapshot folder that links outside the cache is not the repo's (a crafted cache): refused, not read.
    snapshot = next((tmp_path / "hub").glob("models--org--pipe/snapshots/*"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    save_file({"secret.weight": torch.zeros(1)}, outside / "model.safetensors")
    (snapshot / "vae").symlink_to(outside, target_is_directory=True)
    result = run_cli("inspect", "org/pipe/vae")
    assert result.exit_code == 2 and "links outside its snapshot" in result.stderr, result.stderr


def test_shards_without_zero_padding_are_read_in_numeric_order(tmp_path: Path) -> None:
    """An index naming `part-2` and `part-10` (no zero padding): the tensors come shard 2 first, as written;
    a plain string sort put part-10 (the end of the model) before part-2."""
    from safetensors.torch import save_file

    names = {}
    for number in (1, 2, 10):
        shard = f"part-{number}.safetensors"
        save_file({f"layer{number}.weight": torch.zeros(2)}, str(tmp_path / shard), metadata={"format": "pt"})
        names[f"layer{number}.weight"] = shard
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": names}))
    with open_checkpoint(tmp_path) as checkpoint:
        order = [t.name for t in checkpoint.tensors]
    assert order == ["layer1.weight", "layer2.weight", "layer10.weight"]


def test_an_index_spelling_one_shard_two_ways_reads_it_once(tmp_path: Path) -> None:
    """`./a.safetensors` and `a.safetensors` are one file (transformers opens it under both names): it was read
    twice and refused with "tensor 'a' is in both ./a.safetensors and a.safetensors"."""
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2), "a2": torch.ones(2)}, tmp_path / "a.safetensors")
    save_file({"b": torch.ones(2)}, tmp_path / "b.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": "./a.safetensors", "a2": "a.safetensors", "b": ".//b.safetensors"}}))
    code, data = run_json("inspect", str(tmp_path))
    assert code == 0, data
    assert data["num_tensors"] == 3 and data["warnings"] == []
    assert [f["path"] for f in data["files"]] == ["model.safetensors.index.json", "a.safetensors", "b.safetensors"]
