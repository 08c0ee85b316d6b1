"""Review of perf12, thirdparty15 and redteam16: what their changes must keep (the hf:// query regex against the one
it replaced) and the cases they lost, each failing before its fix."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest
import torch

from tests.helpers import run_json

# The regex redteam16 replaced: its `(&name=value)*` group only repeated what `[^/?]*` already takes.
_OLD_QUERY_AT_END = re.compile(r"\?[A-Za-z_][\w.-]*=[^/?]*(?:&[A-Za-z_][\w.-]*=[^/?]*)*\Z")


@pytest.mark.parametrize("seed", range(4))
def test_the_rewritten_query_regex_matches_exactly_where_the_old_one_did(seed: int) -> None:
    """Generated paths over the characters either regex tells apart (`?`, `=`, `&`, `/`, word and other characters,
    a newline): the same match, at the same place, by search, match and fullmatch."""
    from weightdoctor.checkpoint.hub import _QUERY_AT_END

    rng = random.Random(seed)
    alphabet = "?=&/a_Z1.-é \n"
    texts = ["", "model.bin?download=true", "a/b?x=1&y=2", "a?1=2", "a?x=1/b", "?x=&y=?"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))) for _ in range(20_000)]
    matched = 0
    for text in texts:
        for how in ("search", "match", "fullmatch"):
            old, new = getattr(_OLD_QUERY_AT_END, how)(text), getattr(_QUERY_AT_END, how)(text)
            assert (old and old.span()) == (new and new.span()), (text, how)
            matched += old is not None
    assert matched > 100  # the generated texts reach the accepting side too


def test_a_core_ml_package_beside_thousands_of_folders_is_still_named(tmp_path: Path) -> None:
    """redteam16 bounded the look into subfolders to the first 1,000 and the exports' usual folders (onnx/, coreml/,
    ...): a Core ML package at the top of the folder (model.mlpackage/), named with 10 folders beside it, went
    unnamed with 1,200 (`class_*` sort before it)."""
    from safetensors.torch import save_file

    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for i in range(1200):
        (folder / f"class_{i:05d}").mkdir()
    package = folder / "model.mlpackage"
    (package / "Data" / "com.apple.CoreML").mkdir(parents=True)
    (package / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\x08\x04")
    (package / "Manifest.json").write_text("{}")
    code, report = run_json("inspect", str(folder))
    assert code == 0 and [t["name"] for t in report["tensors"]] == ["a.weight"]
    said = [w for w in report["warnings"] if w.startswith("not read")]
    assert said and "model.mlpackage/ (Core ML)" in said[0], report["warnings"]


def _npz_behind_a_misplaced_zip64_locator(path: Path, members: int) -> int:
    """An .npz of `members` arrays (`mel_00000.npy` ...: no module paths, a filter bank's names) whose zip64 locator
    points past the end, its classic end record saying 0 bytes of directory: Python's zipfile reads the zip64 record
    just before the locator and lists every member. Returns the directory's size."""
    import io
    import struct
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(members):
            archive.writestr(f"mel_{i:05d}.npy", b"")
    data = buffer.getvalue()
    end = data.rfind(b"PK\x05\x06")
    _sig, _disk, _cd_disk, n_disk, n, cd_size, cd_offset, _comment = struct.unpack_from("<4sHHHHIIH", data, end)
    zip64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, 1 << 40, 1)
    path.write_bytes(data[:end] + zip64 + locator + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n_disk, n, 0, 0, 0))
    try:
        listed = len(zipfile.ZipFile(path).namelist())  # what zipfile parses: the whole directory (3.11, 3.12.1)
    except zipfile.BadZipFile as exc:
        # Later 3.12 and 3.13 releases check where the locator points, and refuse the file instead (found on a GPU
        # machine's Python 3.12): the directory is still there for the size check to measure.
        assert "zip64 end of central directory locator" in str(exc), exc
    else:
        assert listed == members
    return cd_size


def test_a_sibling_npz_whose_zip64_locator_points_elsewhere_is_not_listed(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """redteam16 left a sibling .npz unlisted when its end records declare over 64 KB of central directory; the size
    was taken where miniz looks (the locator's offset), not where Python's zipfile reads (just before the locator):
    a 118 KB directory measured 0 bytes, and zipfile listed all 2,000 members."""
    from weightdoctor.checkpoint import foreign
    from weightdoctor.security import archive

    path = tmp_path / "mel_filters.npz"
    size = _npz_behind_a_misplaced_zip64_locator(path, 2000)
    assert size > 1 << 16
    assert archive.central_directory_size(path) == size
    listed: list[object] = []
    real = archive.zipfile_names
    monkeypatch.setattr(archive, "zipfile_names", lambda p: listed.append(p) or real(p))
    assert foreign.arrays_not_weights(path) is False and listed == []


# Names whose digits matter (Meta's w1 / w2 / w3 and wo, GPT-2's conv1d-shaped c_attn, fc1 / fc2, layer_norm_2,
# norm1 / norm2, attn_1, GGUF's numbered blocks, ONNX's numbered initializers), `{}` an index.
_DIGIT_NAMES = (
    "layers.{}.feed_forward.w1.weight", "layers.{}.feed_forward.w2.weight", "layers.{}.feed_forward.w3.weight",
    "layers.{}.attention.wo.weight", "layers.{}.attention.wq.weight", "model.layers.{}.self_attn.o_proj.weight",
    "model.layers.{}.mlp.down_proj.weight", "transformer.h.{}.attn.c_attn.weight", "h.{}.mlp.fc2.weight",
    "encoder.layers.{}.fc1.weight", "encoder.layers.{}.fc2.weight", "encoder.layers.{}.layer_norm_2.weight",
    "blocks.{}.norm1.weight", "blocks.{}.norm2.weight", "blocks.{}.attn_1.weight", "transformer.h.{}.norm_1.weight",
    "transformer.h.{}.norm_2.weight", "transformer.h.{}.attn.qkv.weight", "blk.{}.ffn_down.weight",
    "blk.{}.attn_output.weight", "onnx::MatMul_{}", "conv{}d.weight", "heads.{}.proj.weight",
    "vision_model.encoder.layers.{}.self_attn.k_proj.bias", "visual.transformer.resblocks.{}.attn.in_proj_weight",
)


@pytest.mark.parametrize("seed", range(12))
def test_folded_names_give_every_detector_the_same_verdict(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """perf12's `_word_text` writes every digit but 1 as 0 before the detectors' word tests: names whose digits tell
    them apart (w2 against w1, fc2, norm_2 against LitGPT's norm_1., numbered heads) get the same whys and note as
    the names joined as they are."""
    from weightdoctor import diff_keys

    rng = random.Random(seed)
    indices = [0, 1, 2, 3, 9, 10, 12, 21, 99, 101, 120]

    def side() -> list[str]:
        chosen = rng.sample(_DIGIT_NAMES, rng.randrange(1, 8))
        return list(dict.fromkeys(template.format(rng.choice(indices)) for template in chosen for _ in range(3)))

    cases = [(side(), side()) for _ in range(40)]
    folded = [diff_keys.foreign_layout(unexpected, missing) for unexpected, missing in cases]
    assert any(whys or note for whys, note in folded)  # the pairs reach the detectors' verdicts
    monkeypatch.setattr(diff_keys, "_word_text", "\n".join)
    assert folded == [diff_keys.foreign_layout(unexpected, missing) for unexpected, missing in cases]


def test_a_spacy_pipelines_vocab_folder_is_not_called_a_component_with_a_model(tmp_path: Path) -> None:
    """thirdparty15 named any folder of a spaCy pipeline "the X component ..., whose model file is a thinc model":
    vocab/ (strings.json, vectors) holds no model file and is no component. Said as what it is, with the model files
    the pipeline's weights are in; a component folder keeps its wording."""
    from tests.helpers import run_cli
    from tests.test_third_party_layouts15 import _spacy_pipeline

    pipeline = tmp_path / "en_core_web_sm"
    _spacy_pipeline(pipeline, transformer=False)
    result = run_cli("inspect", str(pipeline / "vocab"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "vocab component" not in result.stderr and "whose model file" not in result.stderr, result.stderr
    assert (f"it is the vocab/ folder of a spaCy pipeline ({pipeline}/), which holds no component's model; the "
            "pipeline's weights are thinc models in spaCy's own msgpack format (ner/model, tok2vec/model), not "
            f"PyTorch: import spacy; spacy.load({str(pipeline)!r}) loads it") in result.stderr, result.stderr
    result = run_cli("inspect", str(pipeline / "ner"))
    assert result.exit_code == 2 and "it is the ner component of a spaCy pipeline" in result.stderr, result.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_distcp_shard_beside_a_fifo_named_metadata_json_does_not_hang(tmp_path: Path) -> None:
    """thirdparty15's refusal of a .distcp named alone asks whether its folder is Megatron-Core's torch_dist save,
    reading metadata.json with a blocking open(): a FIFO of that name made the command wait forever. The shard is
    refused as before; a real metadata.json naming the sharded backend still names Megatron-Core."""
    from tests.helpers import run_subprocess

    folder = tmp_path / "iter_0000010"
    folder.mkdir()
    (folder / "__0_0.distcp").write_bytes(b"\0" * 64)
    (folder / ".metadata").write_bytes(b"\x80\x04N.")
    os.mkfifo(folder / "metadata.json")
    result = run_subprocess("inspect", folder / "__0_0.distcp", timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "this is one rank's shard" in lines[0] and "as FSDP, torchtitan and Lightning save one" in lines[0]
    (folder / "metadata.json").unlink()
    (folder / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist"}))
    result = run_subprocess("inspect", folder / "__0_0.distcp", timeout=60)
    assert result.returncode == 2 and "as Megatron-Core's torch_dist format saves one" in result.stderr, result.stderr
