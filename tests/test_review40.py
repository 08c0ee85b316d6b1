"""Review 40: the `hf download` commands of the not-cached messages, and genuine DCP saves past the .metadata
allowlist."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest

from fixtures.build import write_hub_cache
from tests.helpers import one_error_line, run_cli


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hub cache holding org/pipe (one small safetensors file and its config), read offline."""
    import torch
    from safetensors.torch import save_file

    source = tmp_path / "src"
    source.mkdir()
    torch.manual_seed(0)
    save_file({"w": torch.randn(4, 4)}, str(source / "model.safetensors"))
    (source / "config.json").write_text('{"model_type": "bert"}')
    cache = tmp_path / "cache"
    write_hub_cache(cache, "org/pipe", source)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _command_words(line: str, pattern: str = r"`(hf download[^`]*)`") -> list[str]:
    found = re.search(pattern, line)
    assert found, line
    return shlex.split(found.group(1))


@pytest.mark.parametrize("source", ["org/pipe/Llama-3.1-8B", "hf://org/nope/Llama-3.1-8B"])
def test_a_dotted_folder_is_fetched_as_a_folder(offline_cache: Path, source: str) -> None:
    # Before: `hf download org/pipe Llama-3.1-8B`, a file of that name, which the repo has not: nothing fetched.
    line = one_error_line(run_cli("inspect", source))
    assert "folder" in line
    repo = source.removeprefix("hf://").rpartition("/")[0]
    assert _command_words(line) == ["hf", "download", repo, "--include", "Llama-3.1-8B/*"]


@pytest.mark.parametrize(("source", "revision"), [
    ("hf://org/pipe/my dir/model.safetensors", []),
    ("https://huggingface.co/org/pipe/blob/main/my%20dir/model.safetensors", ["--revision", "main"]),
])
def test_a_file_name_with_a_space_is_one_word(offline_cache: Path, source: str, revision: list[str]) -> None:
    # Before: `hf download org/pipe my dir/model.safetensors`, two file names to the pasted command.
    line = one_error_line(run_cli("inspect", source))
    assert "has no my dir/model.safetensors" in line
    assert _command_words(line) == ["hf", "download", "org/pipe", "my dir/model.safetensors", *revision]


def test_a_file_address_read_as_a_path_names_one_file(offline_cache: Path) -> None:
    line = one_error_line(run_cli("inspect", "huggingface.co/org/pipe/blob/it's/my%20dir/x.bin"))
    assert "a web address of one file" in line
    words = _command_words(line, r"download it \((hf download.*?)\) and give its path")
    assert words == ["hf", "download", "org/pipe", "my dir/x.bin", "--revision", "it's"]
    assert line.endswith("or give the repo id: org/pipe --revision 'it'\"'\"'s'")


def test_a_dataset_revision_is_quoted(offline_cache: Path) -> None:
    line = one_error_line(run_cli("inspect", "hf://datasets/org/d@it's/ckpt"))
    assert "the dataset repo org/d is not in the Hugging Face cache" in line
    assert _command_words(line) == ["hf", "download", "org/d", "--repo-type", "dataset", "--revision", "it's"]


def test_a_plain_folder_and_a_file_keep_their_commands() -> None:
    from weightdoctor.checkpoint.hub import download_command

    assert download_command("org/pipe", "v1", folder="vae") == "hf download org/pipe --include 'vae/*' --revision v1"
    assert download_command("org/m", folder="onnx/model.onnx") == "hf download org/m onnx/model.onnx"
    assert download_command("org/m", folder="sd-1.5") == "hf download org/m --include 'sd-1.5/*'"


@pytest.fixture(scope="module")
def dcp_saves(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Genuine DCP saves of the installed torch: tensors, ints, strings, nested dicts and lists, a BytesIO, and a
    model + optimizer state dict, each with single_file_per_rank off and on, two writer threads, no process group."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state_dicts = {
        "plain": {"w": torch.randn(3, 3), "step": 7, "name": "run1", "bytes": io.BytesIO(b"hello"),
                  "nested": {"a": [1, 2, torch.ones(2)], "s": "x"}, "bf": torch.randn(2, dtype=torch.bfloat16)},
        "model_optim": {"model": model_sd, "optim": optim_sd},
    }
    root = tmp_path_factory.mktemp("dcp")
    saves = []
    for name, state_dict in state_dicts.items():
        for single in (False, True):
            folder = root / f"{name}_{int(single)}"
            dcp.save(state_dict, storage_writer=dcp.FileSystemWriter(folder, single_file_per_rank=single,
                                                                     thread_count=2), no_dist=True)
            saves.append(folder)
    return saves


def test_genuine_dcp_saves_are_not_refused(dcp_saves: list[Path], tmp_path: Path) -> None:
    for folder in dcp_saves:
        for args in (("inspect", folder), ("plan-devices", folder, "--cpu", "1GB"),
                     ("convert", folder, "-o", tmp_path / "out.safetensors")):
            line = one_error_line(run_cli(*args))
            assert "it is a torch.distributed.checkpoint (DCP) folder" in line, (args, line)
            assert "suspicious" not in line and "dangerous" not in line, (args, line)


@pytest.mark.parametrize(("module", "name"), [
    ("torch.nn", "Linear"), ("torch.distributed.checkpoint.filesystem", "FileSystemWriter"),
    ("torch.distributed.checkpoint.metadata", "dataclass")])
def test_a_metadata_naming_another_class_is_refused(dcp_saves: list[Path], tmp_path: Path, module: str,
                                                    name: str) -> None:
    import shutil

    folder = tmp_path / "save"
    shutil.copytree(dcp_saves[1], folder)
    # protocol 4: SHORT_BINUNICODE module, MEMOIZE, SHORT_BINUNICODE name, MEMOIZE, STACK_GLOBAL, EMPTY_TUPLE, REDUCE
    (folder / ".metadata").write_bytes(b"\x80\x04\x8c" + bytes([len(module)]) + module.encode() + b"\x94\x8c"
                                       + bytes([len(name)]) + name.encode() + b"\x94\x93)R.")
    line = one_error_line(run_cli("inspect", folder))
    assert f"suspicious: the .metadata of this torch.distributed.checkpoint (DCP) folder names {module}.{name}" \
        in line
    assert str(folder / ".metadata") in line
