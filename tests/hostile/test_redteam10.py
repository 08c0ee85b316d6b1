"""Round 10 of the red team: hostile inputs against the detectors and messages added in round 10 (patterns taken
from a checkpoint's own config, quoted file text, did-you-mean suggestions, format detectors by magic). Each command
must exit 0 with a truthful report or 2 with one line naming the file; never a hang, a traceback or escapes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_subprocess
from tests.test_compressed_tensors9 import DENSE, LINEARS, _config, mixed_recipe_tensors


def _mixed_recipe(folder: Path, groups: dict) -> Path:
    """A pack-quantized Llama layer, attention at 8 bits and the MLP at 4, under the given config groups."""
    tensors = mixed_recipe_tensors()
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_config({
        "quant_method": "compressed-tensors", "format": "mixed-precision", "quantization_status": "compressed",
        "config_groups": groups, "ignore": ["lm_head"]})))
    return folder


def _group(bits: int, *targets: str) -> dict:
    return {"targets": list(targets), "format": "pack-quantized",
            "weights": {"num_bits": bits, "type": "int", "symmetric": True, "strategy": "channel"}}


def _inspect_json_within(folder: Path, seconds: float = 20) -> dict:
    """`inspect --json` in a fresh interpreter, killed past `seconds` (re.match cannot be interrupted in-process)."""
    started = time.monotonic()
    try:
        result = run_subprocess("inspect", str(folder), "--json", timeout=seconds)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"inspect ran past {seconds} s") from exc
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < seconds
    return json.loads(result.stdout)


def test_a_catastrophic_target_pattern_does_not_hang_and_named_layers_keep_their_bits(tmp_path: Path) -> None:
    """compressed-tensors targets `re:(.+)+_never$`: re.match backtracks 2**n times over a layer name of n
    characters (28 for model.layers.0.mlp.up_proj: minutes per layer), and Python's re cannot be interrupted.
    inspect never returned. Such a pattern is not evaluated; the MLP layers its group names exactly keep 4 bits."""
    mlp = [f"model.layers.0.{name}" for name in LINEARS if name.startswith("mlp")]
    folder = _mixed_recipe(tmp_path / "evil", {"group_0": _group(8, "re:.*self_attn.*"),
                                               "group_1": _group(4, *mlp, "re:(.+)+_never$")})
    assert _inspect_json_within(folder)["quantized"]["parameters"] == DENSE


def test_a_layer_a_catastrophic_pattern_might_claim_gets_unknown_bits_not_a_guess(tmp_path: Path) -> None:
    """The attention layers are claimed at 8 bits by `re:.*self_attn.*`; a 4-bit group's `re:(.*)*q_proj$` may
    claim them too (a tie: bits unknown by compressed-tensors' own ranking) and cannot be evaluated in bounded time
    (inspect never returned): the count is unknown, not the attention at 8 bits as if the pattern had not matched.
    Its literal text rules out the layers without `q_proj` (the MLP keeps its 4 bits, no hang there either)."""
    folder = _mixed_recipe(tmp_path / "evil", {"group_0": _group(8, "re:.*self_attn.*"),
                                               "group_1": _group(4, "re:.*mlp.*", "re:(.*)*q_proj$")})
    assert _inspect_json_within(folder)["quantized"]["parameters"] is None


def test_ten_thousand_config_groups_are_matched_in_seconds_and_counted(tmp_path: Path) -> None:
    """10,000 config groups, each a `re:` pattern and a layer name, over 300 packed layers: every target was
    re.match'ed against every layer, each pattern compiled again (re's cache holds 512): inspect ran past a minute.
    Names are looked up, each pattern compiled once and skipped where its literal text is absent."""
    folder = tmp_path / "groups"
    folder.mkdir()
    layers = 300
    tensors = {}
    for i in range(layers):
        tensors[f"model.layers.{i}.mlp.weight_packed"] = torch.zeros(2, 1, dtype=torch.int32)
        tensors[f"model.layers.{i}.mlp.weight_scale"] = torch.zeros(2, 1, dtype=torch.float16)
    save_file(tensors, folder / "model.safetensors")
    groups = {f"group_{j}": {"targets": [f"re:.*layers\\.{j}\\..*", f"model.layers.{j}.self_attn"],
                             "weights": {"num_bits": 4 if j % 2 else 8}} for j in range(10_000)}
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": groups}}))
    # Each layer's 2 int32 hold 32 / bits values each: odd layers 4-bit (16 values each), even ones 8-bit (8).
    assert _inspect_json_within(folder)["quantized"]["parameters"] == layers // 2 * (2 * 8 + 2 * 4)


def test_emoji_codes_in_names_and_quoted_replies_are_printed_as_they_read(tmp_path: Path) -> None:
    """Rich's consoles replace `:smile:` with an emoji: a tensor named `enc.x:smile:y.weight` was listed as
    `enc.x😄y.weight` (a name the file does not hold), and the quoted server reply read back as something else."""
    weights = tmp_path / "names.safetensors"
    save_file({"enc.x:smile:y.weight": torch.zeros(2)}, weights)
    result = run_subprocess("inspect", str(weights), env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "enc.x:smile:y.weight" in result.stdout and "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}" \
        not in result.stdout
    reply = tmp_path / "model.safetensors"
    reply.write_text("Entry not found :thumbs_up: [bold]x[/]")
    result = run_subprocess("inspect", str(reply))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert str(reply) in lines[0] and "reads 'Entry not found :thumbs_up: [bold]x[/]'" in lines[0], lines[0]


def _legacy_save_opening_with(tmp_path: Path, opening: bytes) -> Path:
    """A legacy torch.save file whose first pickle opens with a BINFLOAT: `opening` (b"G" and 8 bytes) pushes a
    float the magic number's pickle leaves below it, so torch.load(weights_only=True) still reads the file."""
    import io

    buffer = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buffer, _use_new_zipfile_serialization=False)
    path = tmp_path / "model.bin"
    path.write_bytes(opening + buffer.getvalue())
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4.0))  # the oracle: torch reads it
    return path


@pytest.mark.parametrize("opening", [b"GGUF\x03\x00\x00\x00\x00", b"Gggml\x00\x00\x00\x00"], ids=["gguf", "ggml"])
def test_a_torch_save_opening_with_a_foreign_magic_is_read_as_the_torch_save_it_is(
    tmp_path: Path, opening: bytes
) -> None:
    """A BINFLOAT before a legacy torch.save's magic number, its bytes spelling a foreign magic:
    - b"GGUF\x03...": refused as 'a GGUF file (llama.cpp / ggml)', though its tensor count (the pickle's bytes,
      about 1e19) cannot fit a file of 400 bytes;
    - b"Gggml...": refused as 'pickled with protocol 0 or 1, which torch.load's weights_only loader refuses',
      while that loader reads it (its PROTO 2 follows).
    Both are read as the torch.save file they are."""
    path = _legacy_save_opening_with(tmp_path, opening)
    result = run_subprocess("inspect", str(path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["format"], data["num_tensors"], data["num_params"]) == ("pytorch-legacy", 1, 4), data


def test_a_bzip2_tar_declaring_gigabytes_is_named_without_decompressing_them(tmp_path: Path) -> None:
    """A .bin that is a bzip2 tar: its first member declares 10 GB of zeros, 11 KB of bzip2 streams. Looking for
    a second member header, tarfile's seekable "r:*" decompressed all 10 GB (minutes). The member headers are read
    from a stream of a bounded number of decompressed bytes: the names seen by then are said."""
    import bz2
    import tarfile

    def header(name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        return info.tobuf(format=tarfile.GNU_FORMAT)

    chunk = 10 << 20
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(bz2.compress(header("big.safetensors", 1000 * chunk)) + bz2.compress(bytes(chunk)) * 1000
                     + bz2.compress(header("model_weights.ckpt", 0) + bytes(1024)))
    assert path.stat().st_size < 200_000
    started = time.monotonic()
    try:
        result = run_subprocess("inspect", str(path), timeout=20)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("inspect ran past 20 s") from exc
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "it is a tar archive holding big.safetensors" in lines[0], lines[0]
    assert time.monotonic() - started < 20


def test_a_mixed_moe_recipe_of_thousands_of_expert_layers_is_counted_in_full() -> None:
    """The bounds on pattern matching must not give up on a real recipe: 6,000 expert layers (a DeepSeek-sized
    layer count) under llm-compressor's usual targets, repeats between literal text (`.*`, `\\d+`), all matched."""
    from weightdoctor.quantized import _compressed_tensors_layer_bits

    names = [f"model.layers.{layer}.mlp.experts.{expert}.{proj}_proj.weight_packed"
             for layer in range(20) for expert in range(100) for proj in ("gate", "up", "down")]
    names += [f"model.layers.{layer}.self_attn.{p}_proj.weight_packed" for layer in range(20) for p in "qkvo"]
    groups = {"attention": {"targets": [r"re:.*self_attn\.(q|k|v|o)_proj$"], "weights": {"num_bits": 8}},
              "experts": {"targets": [r"re:.*\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj$"],
                          "weights": {"num_bits": 4}}}
    started = time.monotonic()
    bits = _compressed_tensors_layer_bits(names, {"config_groups": groups})
    assert time.monotonic() - started < 3
    assert [bits[n] for n in names] == [4] * 6000 + [8] * 80


def test_a_target_pattern_nested_too_deep_to_compile_claims_nothing(tmp_path: Path) -> None:
    """`re:` and 5,000 nested groups: re.match raised RecursionError, not re.error, and inspect said 'unexpected
    RecursionError'. A pattern Python cannot compile claims no layer (compressed-tensors could not match it either);
    a 1 MB pattern of plain text is matched as text."""
    from tests.helpers import run_json

    folder = _mixed_recipe(tmp_path / "deep", {
        "group_0": _group(8, "re:.*self_attn.*"),
        "group_1": _group(4, "re:.*mlp.*", "re:" + "(" * 5000 + "x" + ")" * 5000, "re:" + "a" * 1_000_000)})
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    assert data["quantized"]["parameters"] == DENSE
