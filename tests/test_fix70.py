"""fix70: small message and budget bugs (tied twins' runner, FSDP commands' quoting, GGUF notes, IQ budgets)."""

from __future__ import annotations

import re
import shlex
import tracemalloc
from glob import glob
from pathlib import Path

import pytest
import torch

from fixtures.gguf_files import UNREAD_KINDS, tiny_llama_gguf
from tests.helpers import json_report, run_cli, run_subprocess
from tests.test_thirdparty38 import _save_metaseq_raw, _save_metaseq_reshard
from tests.test_thirdparty39 import _save_fsdp_shards
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.errors import UnsupportedFormat
from weightdoctor.plan_devices import _tied_gpu_split


def test_tied_gpu_split_names_the_model_for_a_top_level_twin() -> None:
    # "shared" (a parameter of the model itself) sorts after "decoder.embed.weight", so it is the twin re-tied to
    # the copy on cuda:0 while its hook runs on cuda:1: the message must name who runs, not an empty module path.
    message = _tied_gpu_split(["shared", "decoder.embed.weight"], {"decoder": 0, "shared": 1})
    assert "so  runs" not in message
    assert "so the model itself (which holds shared) runs on cuda:1 with its weight on cuda:0" in message


def test_tied_gpu_split_still_names_the_module_of_a_nested_twin() -> None:
    message = _tied_gpu_split(["transformer.wte.weight", "lm_head.weight"], {"transformer": 1, "lm_head": 0})
    assert "so transformer.wte runs on cuda:1 with its weight on cuda:0" in message


# --- metaseq's commands on folders whose names hold glob or format characters ------------------------------------
# metaseq is not installed here: consolidate_fsdp_shards reads `glob(f"{pth_prefix}*shard*.pt")`, reshard_fsdp reads
# `glob(input)` and writes `output.format(i=shard)`; both are replayed on the command the message prints.


def _printed(said: str, script: str, flag: str = "") -> str:
    """The argument after `script` (and `flag`) in the command a message prints, as the shell hands it over."""
    match = re.search(rf"python -m metaseq\.scripts\.{script} {re.escape(flag)}{' ' if flag else ''}('[^']*')", said)
    assert match is not None, said
    return shlex.split(match[1])[0]


def test_consolidate_prefix_globs_only_these_shards_in_a_bracketed_folder(tmp_path: Path) -> None:
    folder = tmp_path / "opt[1]"
    _save_metaseq_raw(folder)
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    prefix = _printed(" ".join(result.stderr.split()), "consolidate_fsdp_shards")
    read = sorted(Path(p).name for p in glob(f"{prefix}*shard*.pt"))  # what the script reads
    assert read == [f"checkpoint_last-model_part-{r}-shard{s}.pt" for r in range(2) for s in range(2)], read


def test_consolidate_prefix_of_one_models_fsdp_shards_in_a_starred_folder(tmp_path: Path) -> None:
    folder = tmp_path / "run*?"
    _save_fsdp_shards(folder, world=2)
    _save_fsdp_shards(tmp_path / "runXY", world=2)  # another run's shards, in a folder `run*?` also matches
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    prefix = _printed(" ".join(result.stderr.split()), "consolidate_fsdp_shards")
    read = sorted(glob(f"{prefix}*shard*.pt"))
    assert read == [str(folder / "checkpoint_last-shard0.pt"), str(folder / "checkpoint_last-shard1.pt")], read


def test_reshard_fsdp_input_and_output_of_a_part_in_a_folder_named_with_brackets_and_braces(tmp_path: Path) -> None:
    """Eleven parts are unflattened one at a time by reshard_fsdp: its --input is a glob, its --output a format."""
    folder = tmp_path / "opt[mp]{11}"
    folder.mkdir()
    for part in range(11):
        torch.save({"model": {"flat_param_0": torch.zeros(8), "decoder.version": torch.ones(1)},
                    "shard_metadata": {"param_metadata": [], "buffer_names": ["decoder.version"]}},
                   folder / f"checkpoint_last-model_part-{part}-shard0.pt")
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    said = " ".join(result.stderr.split())
    pattern = _printed(said, "reshard_fsdp", "--input")
    assert [Path(p).name for p in glob(pattern)] == ["checkpoint_last-model_part-0-shard0.pt"], pattern
    output = re.search(r"--output ('[^']*')", said)
    assert output is not None, said
    assert shlex.split(output[1])[0].format(i=0) == str(tmp_path / "opt[mp]{11}-unflat" / "model_part-0.pt"), said


def test_reshard_fsdp_of_flat_parts_in_a_folder_named_with_braces(tmp_path: Path) -> None:
    folder = tmp_path / "opt-{i}[2]"
    _save_metaseq_reshard(folder)
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    said = " ".join(result.stderr.split())
    pattern = _printed(said, "reshard_fsdp", "--input")
    assert glob(pattern) == [str(folder / "reshard-model_part-0.pt")], pattern
    output = re.search(r"--output ('[^']*')", said)
    assert output is not None, said
    written = shlex.split(output[1])[0].format(i=0)
    assert written == str(tmp_path / "opt-{i}[2]-unflat" / "reshard-model_part-0.pt"), said


# --- GGUF: what the types left undecoded (Q8_1, Q8_K) are said to be read by ----------------------------------------


def test_undecoded_gguf_types_are_not_said_to_be_dequantized_by_from_pretrained(tmp_path: Path) -> None:
    """gguf-py's dequantize (what transformers' GGUF loading calls) has no Q8_1 or Q8_K: the notes said
    from_pretrained(gguf_file=) dequantizes them."""
    path, _ = tiny_llama_gguf(tmp_path / "tiny.gguf", kinds=UNREAD_KINDS)
    told = "transformers' from_pretrained(gguf_file=) cannot load them either"
    note = json_report("inspect", str(path))["gguf"]["values_note"]
    assert "dequantizes" not in note and told in note, note
    with open_checkpoint(str(path)) as checkpoint, pytest.raises(UnsupportedFormat) as refused:
        checkpoint.load_tensor("blk.0.attn_q.weight")
    assert "dequantizes" not in str(refused.value) and told in str(refused.value), refused.value
    checked = run_subprocess("check-dtype", str(path), env={"COLUMNS": "400"})
    assert checked.returncode == 0, checked.stderr
    said = " ".join(checked.stdout.split())
    assert "gguf_file=) dequantizes" not in said and told in said, said
    reasons = {row["name"]: row["reason"] for row in json_report("check-dtype", str(path))["skipped"]}
    assert "Q2_K to Q6_K blocks only" not in reasons["blk.0.attn_q.weight"], reasons
    compared = json_report("diff-keys", str(path), str(path), "--values")
    warning = next(w for w in compared["warnings"] if "not compared" in w)
    assert "dequantizes the others" not in warning and told in warning, warning


# --- GGUF: read_dequantized's memory budget holds each decoder's peak -----------------------------------------------


def test_read_dequantized_budgets_every_decoders_peak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_dequantized refuses a tensor whose float32 values, one chunk's bytes and the decoder's temporaries are
    more memory than is available. It allowed 16 bytes a value for the temporaries; the IQ3 decoders hold ~17-18
    (tracemalloc). Each type's tensor is one whole chunk of random blocks, read through the reader; the decoder's
    peak on that chunk must lie within what was asked of require_memory."""
    import numpy as np

    import weightdoctor.checkpoint.safetensors_format as safetensors_format
    from fixtures.gguf_files import Tensor, llama_metadata, write_gguf
    from weightdoctor.checkpoint import gguf_quants
    from weightdoctor.checkpoint.gguf_format import DEQUANTIZED_TYPES, GGML_TYPES_BY_NAME

    rng = np.random.default_rng(0)
    chunks: dict[str, bytes] = {}
    tensors = []
    for kind_name in sorted(DEQUANTIZED_TYPES):
        kind = GGML_TYPES_BY_NAME[kind_name]
        blocks = gguf_quants.CHUNK_BYTES // kind.type_size
        chunks[kind_name] = rng.integers(0, 256, blocks * kind.type_size, dtype=np.uint8).tobytes()
        tensors.append(Tensor(f"t.{kind_name}", [blocks * kind.block_size], kind_name, chunks[kind_name]))
    path = tmp_path / "every-type.gguf"
    write_gguf(path, llama_metadata(), tensors)
    asked: dict[str, int] = {}
    require = safetensors_format.require_memory

    def recording(where: Path | str, what: str, length: int, *args: object, **kwargs: object) -> None:
        asked[what.split("'")[1]] = length
        require(where, what, length, *args, **kwargs)

    monkeypatch.setattr(safetensors_format, "require_memory", recording)
    short = []
    with open_checkpoint(str(path)) as checkpoint:
        for kind_name, raw in chunks.items():
            values = GGML_TYPES_BY_NAME[kind_name].block_size * (len(raw) // GGML_TYPES_BY_NAME[kind_name].type_size)
            assert checkpoint.load_tensor(f"t.{kind_name}").numel() == values
            allowed = asked[f"t.{kind_name}"] - values * 4 - len(raw)  # beyond the result and the chunk read
            gguf_quants.dequantize(kind_name, raw)  # grids and tables built before measuring
            tracemalloc.start()
            try:
                gguf_quants.dequantize(kind_name, raw)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            if peak > allowed:
                short.append(f"{kind_name}: peak {peak / values:.1f} bytes a value, allowed {allowed / values:.1f}")
    assert not short, short
