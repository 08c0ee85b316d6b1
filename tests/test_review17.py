"""review17: the fixlist12 and thirdparty9 merges reviewed for false positives.

Covered: `inspect --verify` read a date or a zero-padded step count (`model-20240115.pt`, `ckpt-00050000.pt`) and a
git commit or md5 digest (`model-<40 hex>.pt`) in a file name as torch.hub's sha256 prefix and exited 1 on an ordinary
training checkpoint; a /raw/ Hub address was read as a folder where /blob/ and /resolve/ name a file; a config.json
of another library (Coqui TTS: no model_type, no architectures) got the from_pretrained(folder)-raises warning; GPTQ
`dynamic` beside a top-level bits GPTQConfig refuses (5, 16) was said to build every Linear at it; numbered parts or
variants (mp_rank_00/ mp_rank_01/, fp16/ fp32/) were called a run's saves, the last its latest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json


def _save(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({"fc.weight": torch.randn(4, 3), "fc.bias": torch.zeros(4)}, path)
    return path


@pytest.mark.parametrize("name", ["model-20240115.pt", "ckpt-00050000.pt", "checkpoint-12345678.pth",
                                  "model-" + "3f2a9c1b" * 5 + ".pt", "model-" + "0123abcd" * 4 + ".pth"])
def test_verify_does_not_read_a_date_step_or_commit_in_a_name_as_a_torch_hub_hash(tmp_path: Path, name: str) -> None:
    """A number (a date, a zero-padded step) or a git commit / md5 digest after the last dash is no sha256 prefix
    torch.hub wrote: a file whose sha256 does not start with it is an ordinary save, not an altered download."""
    path = _save(tmp_path / name)
    code, data = run_json("inspect", str(path), "--verify")
    assert data["verify"]["hash_mismatches"] == [], data["verify"]
    assert code == 0 and data["verify"]["mismatches"] == []


def test_verify_still_confirms_an_all_digit_hash_prefix_that_matches(tmp_path: Path) -> None:
    """torchvision's vgg13-19584684.pth carries an all-digit prefix: when the file's sha256 does start with the digits
    of its name, the note says so, as for any other prefix."""
    import io

    for bias in range(5000):  # about 1 in 170 sha256 digests starts with 8 decimal digits
        buffer = io.BytesIO()
        torch.save({"fc.weight": torch.ones(4, 3), "fc.bias": torch.full((4,), float(bias))}, buffer)
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        if digest[:8].isdigit():
            break
    assert digest[:8].isdigit()
    named = tmp_path / f"vgg13-{digest[:8]}.pth"
    named.write_bytes(buffer.getvalue())
    code, data = run_json("inspect", str(named), "--verify")
    assert code == 0 and f"its sha256 starts with {digest[:8]}" in " ".join(data["verify"]["notes"]), data["verify"]


def test_verify_still_fails_a_hex_prefix_that_does_not_match(tmp_path: Path) -> None:
    """resnet18-0676ba61.pth whose sha256 starts elsewhere is still a mismatch and exit 1."""
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)  # torch.hub's download folder
    path = _save(tmp_path / "hub" / "checkpoints" / "resnet18-0676ba61.pth")
    code, data = run_json("inspect", str(path), "--verify")
    [line] = data["verify"]["hash_mismatches"]
    assert code == 1 and line.startswith("resnet18-0676ba61.pth: the name carries sha256 prefix 0676ba61"), line


def test_a_raw_hub_address_names_a_file_as_blob_and_resolve_do() -> None:
    """huggingface_hub parses the /raw/ page as it does /blob/ and /resolve/: each names one file, so a file with no
    weight suffix there (`.../raw/main/weights`) is a file, not a folder of the repo."""
    from weightdoctor.checkpoint.hub import hub_location

    for page in ("raw", "blob", "resolve"):
        located = hub_location(f"https://huggingface.co/org/m/{page}/main/weights")
        assert located is not None and located.path_in_repo == "weights" and located.names_file, (page, located)
    located = hub_location("https://huggingface.co/org/m/tree/main/weights")
    assert located is not None and not located.names_file


def test_a_config_json_of_another_library_is_no_from_pretrained_folder(tmp_path: Path) -> None:
    """A Coqui TTS folder (config.json of its own, no model_type, beside best_model.pth) is not a transformers
    folder: inspect and convert said from_pretrained(folder) raises and that save_pretrained names would fix it."""
    import json

    folder = tmp_path / "tts"
    folder.mkdir()
    torch.save({"model": {"enc.weight": torch.ones(4, 4)}}, folder / "best_model.pth")
    (folder / "config.json").write_text(json.dumps({"model": "vits", "run_name": "ljspeech",
                                                    "audio": {"sample_rate": 22050}}))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and not any("from_pretrained" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "out"))
    warnings = data["plan"]["warnings"]
    assert code == 0 and warnings and not any("from_pretrained" in w for w in warnings), warnings
    # A transformers config (model_type) beside the same file is still warned of.
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    code, data = run_json("inspect", str(folder))
    assert any("from_pretrained(folder) looks for model.safetensors" in w for w in data["warnings"]), data["warnings"]


@pytest.mark.parametrize("bits", [5, 16])
def test_gptqmodel_dynamic_with_bits_gptqconfig_refuses_says_from_pretrained_raises(bits: int) -> None:
    """`bits: 5` (or 16) is a number of bits a packed int32 holds, but not one GPTQConfig takes (2, 3, 4 or 8, checked
    below): the warning said from_pretrained builds every Linear "at the top-level 5 bits", where it raises."""
    from transformers import GPTQConfig

    from weightdoctor.quantized import gptq_dynamic_warning

    quantization: dict[str, object] = {"quant_method": "gptq", "bits": bits,
                                       "dynamic": {r".*\.self_attn\..*": {"bits": 8}}}
    with pytest.raises(ValueError, match="bits"):
        GPTQConfig.from_dict(dict(quantization))
    warning = gptq_dynamic_warning({"quantization_config": quantization})
    assert warning is not None and f"and the config sets top-level `bits` to {bits}: GPTQConfig needs 2, 3, 4 or 8 " \
           "there, so from_pretrained raises before building any Linear" in warning, warning
    assert "builds every Linear of the blocks at" not in warning


def _folders_of_weights(folder: Path, names: list[str]) -> Path:
    from safetensors.torch import save_file

    for name in names:
        (folder / name).mkdir(parents=True)
        save_file({"a.weight": torch.zeros(2, 2)}, folder / name / "model.safetensors")
    return folder


@pytest.mark.parametrize("names", [["mp_rank_00", "mp_rank_01"], ["rank0", "rank1", "rank2"], ["fp16", "fp32"],
                                   ["int4", "int8"]])
def test_parts_or_variants_with_numbers_are_not_called_the_runs_latest_save(tmp_path: Path,
                                                                             names: list[str]) -> None:
    """Megatron's tensor-parallel mp_rank_00/ mp_rank_01/ (parts of one save) and fp16/ fp32/ (variants of one model)
    end in numbers as a run's saves do: the last was said to be "the highest-numbered, the run's latest save"."""
    folder = _folders_of_weights(tmp_path / "m", names)
    line = " ".join(run_cli("inspect", str(folder)).output.split())
    assert "weights are in subfolders" in line and "latest save" not in line, line
    assert line.endswith(f"e.g. {folder / names[0]}"), line


@pytest.mark.parametrize(("names", "latest"), [(["v1", "v2", "v10"], "v10"),
                                               (["checkpoint-500", "checkpoint-1000"], "checkpoint-1000"),
                                               (["iter_0000500", "iter_0001000"], "iter_0001000"),
                                               (["step-90", "step-100"], "step-100")])
def test_a_runs_saves_still_point_at_the_highest_number(tmp_path: Path, names: list[str], latest: str) -> None:
    """v1/ v2/ v10/ and checkpoint-500/ checkpoint-1000/: by number, not by text (v10 sorts before v2 as text)."""
    folder = _folders_of_weights(tmp_path / "m", names)
    line = " ".join(run_cli("inspect", str(folder)).output.split())
    assert line.endswith(f"e.g. {folder / latest} (the highest-numbered, the run's latest save)"), line
