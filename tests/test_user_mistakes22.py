"""Round 22 of the common mistakes users make: checkpoints prepared for production and upload with `convert` and
`shard`, the outputs read back by transformers, huggingface_hub and safetensors.

Covers: `convert --dtype fp16` of a T5 cast the `wo` weights its class keeps in float32 (`_keep_in_fp32_modules`)
without a word: `from_pretrained(dtype=torch.float16)` and its `save_pretrained` keep them float32, and the output
loaded them back up-cast with the fp16 rounding kept. Now a warning says so and names the `--keep-fp32` that writes
them as save_pretrained does; pasted, the output loads exactly as `from_pretrained(source, dtype=torch.float16)`.
`shard --max 0,5GB` (a decimal comma, as much of Europe writes it) or `--max 200,000` said only "'0,5' is not a
number"; now the line gives the number to type, a thousands separator left out, and both readings where a group of
three digits can be either.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_subprocess

_T5 = dict(vocab_size=256, d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2)


def _state_dict_with_tied_names(model: Any) -> dict[str, Any]:
    """What transformers 4's `save_pretrained(safe_serialization=False)` put in a pytorch_model.bin: every name, tied
    ones sharing one storage (transformers 5 writes safetensors only)."""
    return model.state_dict()


@pytest.fixture(scope="module")
def t5_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded T5ForConditionalGeneration fine-tune as an old pytorch_model.bin folder (float32)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**_T5))
    folder = tmp_path_factory.mktemp("u22") / "t5-finetuned"
    model.config.save_pretrained(folder)
    torch.save(_state_dict_with_tied_names(model), folder / "pytorch_model.bin")
    return folder


def _loaded(folder: Path, dtype: Any = "auto") -> dict[str, Any]:
    from transformers import T5ForConditionalGeneration

    return T5ForConditionalGeneration.from_pretrained(folder, dtype=dtype).state_dict()


def _differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    import torch

    return sorted(name for name in a if a[name].dtype != b[name].dtype or not torch.equal(a[name], b[name]))


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_a_fp16_cast_of_t5_names_the_keep_fp32_that_writes_wo_as_save_pretrained_does(
        t5_bin: Path, tmp_path: Path, command: str) -> None:
    """Was: no warning, and the output's `wo` (float32 once loaded) held fp16-rounded values, unlike what
    `from_pretrained(dtype=torch.float16).save_pretrained()` writes. Now the warning names the tensors' module and
    the option; pasted into the same command with --force, the output loads equal to that from_pretrained."""
    import torch

    out = tmp_path / "t5-fp16"
    typed = [command, str(t5_bin), "-o", str(out), "--dtype", "fp16"] + (["--max", "200KB"] if command == "shard"
                                                                           else [])
    first = run_subprocess(*typed)
    assert first.returncode == 0, first.stderr
    reference = _loaded(t5_bin, torch.float16)
    cast = _loaded(out)
    rounded = _differing(reference, cast)
    assert rounded and all(".wo." in name for name in rounded)  # what the warning is about: only wo differs
    warning = next(line for line in first.stderr.splitlines() if "_keep_in_fp32_modules: wo" in line)
    assert f"casts {len(rounded)} tensors that from_pretrained(dtype=torch.float16) keeps in float32" in warning
    option = shlex.split(warning.split("run this command again with ", 1)[1].removesuffix(" (and --force)"))
    assert option == ["--keep-fp32", r"\.wo\."]
    pasted = run_subprocess(*typed, *option, "--force")
    assert pasted.returncode == 0, pasted.stderr
    assert "_keep_in_fp32_modules: wo)," not in pasted.stderr  # no longer said once kept
    # Kept by the class at load: the note on --keep-fp32 tensors loaded at the config's dtype has nothing to say.
    assert "kept in float32 included" not in pasted.stderr
    assert _differing(reference, _loaded(out)) == []
    assert _differing(reference, _loaded(out, torch.float16)) == []
    from safetensors import safe_open

    stored: dict[str, str] = {}
    for shard in out.glob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            names = f.keys()  # a safe_open handle is no mapping: it cannot be iterated itself
            stored |= {name: str(f.get_slice(name).get_dtype()) for name in names}
    assert {name for name, dtype in stored.items() if dtype == "F32"} == set(rounded)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"


def test_a_keep_fp32_of_its_own_gets_the_class_modules_added_to_it(t5_bin: Path, tmp_path: Path) -> None:
    """A --keep-fp32 already given (the layer norms) is kept in the expression offered, in place of the user's; the
    note on tensors from_pretrained loads at one dtype counts only those the class does not keep."""
    out = tmp_path / "t5-fp16"
    typed = ["convert", str(t5_bin), "-o", str(out), "--dtype", "fp16", "--keep-fp32", "layer_norm"]
    first = run_subprocess(*typed)
    assert first.returncode == 0, first.stderr
    warning = next(line for line in first.stderr.splitlines() if "_keep_in_fp32_modules: wo" in line)
    tail = warning.split("run this command again with ", 1)[1]
    assert tail.endswith(" in place of yours (and --force)")
    option = shlex.split(tail.removesuffix(" in place of yours (and --force)"))
    assert option == ["--keep-fp32", r"(?:layer_norm)|\.wo\."]
    pasted = run_subprocess(*typed[:-2], *option, "--force", "--json")
    assert pasted.returncode == 0, pasted.stderr
    plan = json.loads(pasted.stdout)["plan"]
    assert sum(".wo." in name for name in plan["kept_fp32"]) == 4
    assert sum("layer_norm" in name for name in plan["kept_fp32"]) == len(plan["kept_fp32"]) - 4
    loaded_cast = len(plan["kept_fp32"]) - 4
    assert (f"{loaded_cast} of the {len(plan['kept_fp32'])} kept in float32 included (it keeps the other 4 in "
            "float32") in pasted.stderr


def test_a_bf16_cast_of_t5_says_nothing_of_what_it_keeps_at_fp16(t5_bin: Path, tmp_path: Path) -> None:
    """T5 keeps `wo` in float32 at float16 only (no _keep_in_fp32_modules_strict): at bf16 no such line."""
    result = run_subprocess("convert", str(t5_bin), "-o", str(tmp_path / "bf16"), "--dtype", "bf16")
    assert result.returncode == 0, result.stderr
    assert "_keep_in_fp32_modules" not in result.stderr


@pytest.mark.parametrize(("typed", "meant"), [
    ("0,5GB", ["0.5GB"]),
    ("12,5 MB", ["12.5MB"]),
    ("200,000", ["200000"]),
    ("1,500,000KB", ["1500000KB"]),
    ("1,500KB", ["1500KB", "1.500KB"]),
])
def test_a_size_written_with_a_comma_says_the_number_to_type(t5_bin: Path, tmp_path: Path, typed: str,
                                                             meant: list[str]) -> None:
    """Was "cannot parse size '0,5GB': '0,5' is not a number". Each size the line offers, pasted as --max, plans."""
    out = tmp_path / "sharded"
    result = run_subprocess("shard", str(t5_bin), "--max", typed, "-o", str(out), "--dry-run")
    assert result.returncode == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "is not a number" not in line
    assert line.startswith(f"error: invalid value for '--max': cannot parse size {typed!r}: ")
    offered = [word for word in line.replace(",", " ").split() if word in meant]
    assert offered == meant
    for size in meant:
        pasted = run_subprocess("shard", str(t5_bin), "--max", size, "-o", str(out), "--dry-run", "--json")
        assert pasted.returncode == 0, pasted.stderr
        from weightdoctor.units import parse_size

        assert json.loads(pasted.stdout)["plan"]["max_bytes"] == parse_size(size)


def test_a_comma_that_is_neither_reading_keeps_the_plain_line(t5_bin: Path, tmp_path: Path) -> None:
    result = run_subprocess("shard", str(t5_bin), "--max", "1,2,3GB", "-o", str(tmp_path / "x"), "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: invalid value for '--max': cannot parse size '1,2,3GB': '1,2,3' is not "
                                     "a number")


def test_a_fp16_cast_of_blip2_names_its_kept_submodules_and_the_keep_fp32_that_keeps_them(tmp_path: Path) -> None:
    """BLIP-2 keeps a whole submodule and a parameter in float32 (`qformer`, `query_tokens`): the line names those,
    not the last names of the tensors under them (`dense`, `key`, ...), and an expression by their first segment;
    pasted, the output loads equal to `from_pretrained(source, dtype=torch.float16)`."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    torch.manual_seed(0)
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16, initializer_range=0.02),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=32, vocab_size=100),
        text_config=dict(model_type="opt", hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100, word_embed_proj_dim=32),
        num_query_tokens=4)
    source = tmp_path / "blip2"
    Blip2ForConditionalGeneration(config).save_pretrained(source)
    out = tmp_path / "blip2-fp16"
    typed = ["convert", str(source), "-o", str(out), "--dtype", "fp16"]
    first = run_subprocess(*typed)
    assert first.returncode == 0, first.stderr
    warning = next(line for line in first.stderr.splitlines() if "_keep_in_fp32_modules" in line)
    assert "(its class's _keep_in_fp32_modules: qformer, query_tokens)" in warning
    option = shlex.split(warning.split("run this command again with ", 1)[1].removesuffix(" (and --force)"))
    assert option == ["--keep-fp32", r"^(?:qformer|query_tokens)(?:\.|$)"]
    assert run_subprocess(*typed, *option, "--force").returncode == 0
    reference = Blip2ForConditionalGeneration.from_pretrained(source, dtype=torch.float16).state_dict()
    assert _differing(reference, Blip2ForConditionalGeneration.from_pretrained(out, dtype=torch.float16)
                      .state_dict()) == []
