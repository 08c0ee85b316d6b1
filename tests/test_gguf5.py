"""GGUF files, the fifth round: a split GGUF (llama.cpp's gguf-split) read as one checkpoint from any of its parts,
a GGUF of a Hub repo of several named by its address, the metadata's config checked against the tensors, the newer
llama.cpp file types, and a GGUF plan with disk said as transformers loads it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fixtures.gguf_files import (
    UINT32,
    Tensor,
    llama_metadata,
    split_gguf,
    tiny_llama_gguf,
    write_gguf,
)
from tests.helpers import json_report, run_cli, run_json, run_subprocess


def _tensors_of(path: Path) -> list[Tensor]:
    """The tensors of a GGUF file as the writer takes them (bytes, dims and type as stored)."""
    from weightdoctor.checkpoint.gguf_format import read_header

    header = read_header(path, path.name)
    raw = path.read_bytes()
    return [Tensor(info.name, list(reversed(info.shape)), header.ggml_types[info.name],
                   raw[header.data_start + info.data_offsets[0]:header.data_start + info.data_offsets[1]])
            for info in header.tensors]


def _split_tiny_llama(folder: Path, parts: int = 3, **options: object) -> tuple[Path, list[Path]]:
    """A tiny Llama GGUF (F32 / F16, values read) and the same tensors split by gguf-split's layout."""
    folder.mkdir(exist_ok=True)
    whole, _ = tiny_llama_gguf(folder / "whole.gguf", quantized=False)
    split = folder / "split"
    split.mkdir()
    paths = split_gguf(split, "tiny", llama_metadata(tokens=1000, layers=2, hidden=256), _tensors_of(whole), parts,
                       **options)  # type: ignore[arg-type]
    return whole, paths


def _refused(*args: str) -> str:
    result = run_cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize("named", [0, 1, 2])
def test_a_split_gguf_is_read_as_one_checkpoint_from_any_part(tmp_path: Path, named: int) -> None:
    from weightdoctor.checkpoint import open_checkpoint

    whole, parts = _split_tiny_llama(tmp_path)
    assert [p.name for p in parts] == ["tiny-00001-of-00003.gguf", "tiny-00002-of-00003.gguf",
                                       "tiny-00003-of-00003.gguf"]
    report = json_report("inspect", str(parts[named]))
    reference = json_report("inspect", str(whole))
    assert report["num_tensors"] == reference["num_tensors"] == 14
    assert report["num_params"] == reference["num_params"]
    # The GGUF panel counts every part's tensors, with the first part's metadata (the model's, gguf-split's layout)
    assert report["gguf"]["tensor_types"] == reference["gguf"]["tensor_types"]
    assert report["gguf"]["hidden_size"] == 256 and report["gguf"]["metadata"]["split.count"] == 3
    [note] = [w for w in report["warnings"] if "split GGUF" in w]
    assert "the 3 parts of a split GGUF" in note and "read as one checkpoint of 14 tensors" in note
    assert "llama-gguf-split --merge" in note  # transformers still reads one file
    assert not [w for w in report["warnings"] if "only its own tensors" in w or "index" in w]
    with open_checkpoint(str(parts[named])) as split, open_checkpoint(str(whole)) as one:
        assert [f.relpath for f in split.files] == [p.name for p in parts]
        for info in one.tensors:
            assert torch.equal(split.load_tensor(info.name), one.load_tensor(info.name)), info.name


def test_a_split_gguf_whose_first_part_holds_no_tensor_is_read(tmp_path: Path) -> None:
    """gguf-split --no-tensor-first-split: the first part holds the metadata alone."""
    from weightdoctor.checkpoint.gguf_format import read_header

    _, parts = _split_tiny_llama(tmp_path, parts=3, no_tensor_first_split=True)
    assert read_header(parts[0], parts[0].name).tensors == []
    report = json_report("inspect", str(parts[2]))
    assert report["num_tensors"] == 14 and report["gguf"]["architecture"] == "llama"


def test_stats_and_check_dtype_read_tensors_across_parts(tmp_path: Path) -> None:
    whole, parts = _split_tiny_llama(tmp_path)
    code, split = run_json("check-dtype", str(parts[0]), "--target", "fp16")
    code_whole, one = run_json("check-dtype", str(whole), "--target", "fp16")
    assert code == code_whole and split["tensors_checked"] == one["tensors_checked"] == 14
    assert split["stored_dtypes"] == one["stored_dtypes"] and split["targets"] == one["targets"]


@pytest.mark.parametrize(("missing", "said"), [
    ([1], "other part tiny-00002-of-00003.gguf is not beside it"),
    ([1, 2], "other parts tiny-00002-of-00003.gguf, tiny-00003-of-00003.gguf are not beside it"),
])
def test_a_missing_part_is_one_line_naming_it(tmp_path: Path, missing: list[int], said: str) -> None:
    _, parts = _split_tiny_llama(tmp_path)
    for index in missing:
        parts[index].unlink()
    line = _refused("inspect", str(parts[0]))
    assert line.startswith(f"error: {parts[0]}: part 1 of 3 of a split GGUF"), line
    assert said in line and "download every part" in line, line


def test_a_folder_of_a_split_gguf_reads_the_set(tmp_path: Path) -> None:
    """The folder of one set's parts is read as that set (gguf6; it asked for its first part before)."""
    whole, parts = _split_tiny_llama(tmp_path)
    code, report = run_json("inspect", str(parts[0].parent))
    assert code == 0 and report["num_tensors"] == json_report("inspect", str(whole))["num_tensors"] == 14, report
    assert any("the 3 parts of a split GGUF (llama.cpp's gguf-split), read as one checkpoint" in w
               for w in report["warnings"]), report["warnings"]


def test_a_part_named_alone_with_its_set_missing_says_which(tmp_path: Path) -> None:
    _, parts = _split_tiny_llama(tmp_path)
    parts[0].unlink()
    line = _refused("inspect", str(parts[2]))
    assert "part 3 of 3" in line and "tiny-00001-of-00003.gguf is not beside it" in line, line


def test_convert_and_plan_devices_of_a_split_gguf(tmp_path: Path) -> None:
    _, parts = _split_tiny_llama(tmp_path)
    # convert refuses a GGUF in one line, a split one as the whole set
    line = _refused("convert", str(parts[1]), "-o", str(tmp_path / "out.safetensors"))
    assert "a GGUF file (llama.cpp)" in line and "llama-gguf-split --merge" in line, line
    assert not (tmp_path / "out.safetensors").exists()
    # plan-devices plans the model the first part's metadata gives, loaded as the merged file
    code, report = run_json("plan-devices", str(parts[2]), "--gpu", "1GB")
    assert code == 0 and report["verdict"] == "fits-on-gpus"
    [said] = [w for w in report["warnings"] if "parts of a split GGUF, planned as" in w]
    assert "gguf_file='tiny.gguf'" in said and "llama-gguf-split --merge" in said, said


def test_a_gguf_of_a_hub_repo_of_several_is_read_by_its_address(tmp_path: Path) -> None:
    """A repo with one GGUF per quantization: the folder asks for a file, listing them; `org/name/file.gguf` (as
    from_pretrained(repo, gguf_file=) names one) reads that file, for inspect and plan-devices."""
    from fixtures.hub_cache import commit_of, write_snapshot

    data = tiny_llama_gguf(tmp_path / "tiny.gguf")[0].read_bytes()
    cache = tmp_path / "hub"
    kinds = ["IQ2_XS", "IQ3_XXS", "IQ4_XS", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    write_snapshot(cache, "org/tiny-gguf", commit_of("main"), {f"tiny.{kind}.gguf": data for kind in kinds})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    refused = run_subprocess("inspect", "org/tiny-gguf", env=env, cwd=tmp_path)
    # every quantization listed (the ninth too: six were shown, with no word of the others)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert ", ".join(f"tiny.{kind}.gguf" for kind in sorted(kinds)) in refused.stderr, refused.stderr
    done = run_subprocess("inspect", "org/tiny-gguf/tiny.Q8_0.gguf", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"num_tensors": 12' in done.stdout
    planned = run_subprocess("plan-devices", "org/tiny-gguf/tiny.Q8_0.gguf", "--gpu", "1GB", "--json", env=env,
                             cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert '"model_class": "LlamaForCausalLM"' in planned.stdout and "gguf_file='tiny.Q8_0.gguf'" in planned.stdout


@pytest.mark.parametrize(("metadata", "dims", "drop", "said"), [
    ({"llama.embedding_length": (UINT32, 512)}, {}, (),
     "llama.embedding_length=512, token_embd.weight is 256 wide"),
    ({"llama.block_count": (UINT32, 4)}, {}, (),
     "llama.block_count=4, and it holds no tensor of 2 of its blocks (blk.0 to blk.1, 2 blocks)"),
    ({"llama.block_count": (UINT32, 1)}, {}, (),
     "llama.block_count=1, and it holds tensors of block 1 (blk.0 to blk.1, 2 blocks)"),
    ({"llama.attention.head_count_kv": (UINT32, 4)}, {}, (),
     "llama.attention.head_count_kv=4 of 64 (heads times head size 256), blk.0.attn_k.weight has 128 rows"),
    ({}, {"token_embd.weight": [256, 900]}, (),
     "tokenizer.ggml.tokens holds 1,000 tokens, token_embd.weight has 900 rows"),
])
def test_metadata_that_disagrees_with_the_tensors_is_warned(tmp_path: Path, metadata: dict, dims: dict,
                                                            drop: tuple, said: str) -> None:
    whole, _ = tiny_llama_gguf(tmp_path / "tiny.gguf", quantized=False)
    tensors = [Tensor(t.name, dims.get(t.name, t.dims), t.ggml, None if t.name in dims else t.data)
               for t in _tensors_of(whole)]
    path = write_gguf(tmp_path / "edited.gguf", {**llama_metadata(tokens=1000, layers=2, hidden=256), **metadata},
                      tensors)
    report = json_report("inspect", str(path))
    found = [w for w in report["warnings"] if "its GGUF metadata says" in w]
    [warning] = [w for w in found if said in w] or [report["warnings"]]
    assert "cannot load it" in warning or "does not load" in warning
    # The file as written agrees with itself: nothing said
    assert not [w for w in json_report("inspect", str(whole))["warnings"] if "its GGUF metadata says" in w]


@pytest.mark.parametrize(("file_type", "name"), [(39, "MOSTLY_NVFP4"), (40, "MOSTLY_Q1_0"), (41, "MOSTLY_Q2_0")])
def test_newer_llama_cpp_file_types_are_named(tmp_path: Path, file_type: int, name: str) -> None:
    path = write_gguf(tmp_path / "m.gguf", {**llama_metadata(tokens=10), "general.file_type": (UINT32, file_type)},
                      [Tensor("a.weight", [32], "F32")])
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0 and f"{file_type} ({name}," in result.stdout, result.stdout


def test_the_newest_ggml_types_have_ggml_sizes() -> None:
    """ggml.h / gguf-py constants.py (llama.cpp after b9916): NVFP4 40 (64, 36), Q1_0 41 (128, 18), Q2_0 42 (64, 18)."""
    from weightdoctor.checkpoint.gguf_format import GGML_TYPES

    found = {t.id: (t.name, t.block_size, t.type_size) for t in GGML_TYPES.values() if t.id >= 39}
    assert found == {39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18), 42: ("Q2_0", 64, 18)}


def test_a_split_part_read_alone_names_its_set(tmp_path: Path) -> None:
    """Parts whose names say another set than their metadata: the set is the name's; its metadata checked."""
    _, parts = _split_tiny_llama(tmp_path, parts=2)
    os.rename(parts[1], parts[1].with_name("renamed.gguf"))
    line = _refused("inspect", str(parts[0]))
    assert "tiny-00002-of-00002.gguf is not beside it" in line, line
