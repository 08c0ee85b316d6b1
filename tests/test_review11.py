"""Review of round 11's merges (check-dtype's exact-cast skip, quanto / GPTQ-AWQ MoE, expand_user): bugs found."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json

FP8 = torch.float8_e4m3fn


def _refused(path: Path, *args: str) -> str:
    """check-dtype on `path`: exit 2 with one line (no traceback, nothing on stdout); that line."""
    result = run_cli("check-dtype", str(path), *args)
    assert result.exit_code == 2, result.stdout
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize(("stored", "args"), [(FP8, ()), (torch.float16, ("--target", "fp32"))])
def test_exact_skip_refuses_a_meta_tensor(tmp_path: Path, stored: torch.dtype, args: tuple[str, ...]) -> None:
    # A tensor saved from the meta device has no values: a read refused it (exit 2); the exact skip judged it
    # "safe" from its dtype alone (exit 0).
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.empty(8, 8, dtype=stored, device="meta"), "b": torch.ones(4)}, path)
    message = _refused(path, *args)
    assert "pytorch_model.bin" in message and "tensor 'w' is on the meta device" in message


def test_exact_skip_refuses_an_expanded_view(tmp_path: Path) -> None:
    # One fp8 byte expanded to 300 M values: refused as a read would be, not counted as 300 M safe values.
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(1, dtype=FP8).expand(300 * 2**20)}, path)
    message = _refused(path)
    assert "tensor 'w' is a view of 314,572,800 bytes over a storage of 1" in message


def test_exact_skip_refuses_overlapping_views(tmp_path: Path) -> None:
    # 300 overlapping views of a 1 MB storage claim 300 MB: each view passes alone, the file is refused whole.
    path = tmp_path / "pytorch_model.bin"
    base = torch.zeros(2**20, dtype=FP8)
    torch.save({f"v{i}": base[i:] for i in range(300)}, path)
    message = _refused(path)
    assert "300 views of the storage of tensor 'v0'" in message and "overlapping views" in message


def test_exact_skip_still_skips_a_sound_pickle(tmp_path: Path) -> None:
    # The check reads nothing: a sound fp8 .bin is still judged from its dtype, row by row.
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": (torch.randn(16, 16, generator=torch.Generator().manual_seed(0)) * 10).to(FP8)}, path)
    code, data = run_json("check-dtype", str(path))
    assert code == 0
    row, = data["targets"]["fp16"]["tensors"]
    assert (row["name"], row["read"], row["verdict"], row["values"], row["nan"]) == ("w", False, "safe", 256, None)


# expand_user -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [("convert", "--dtype", "fp16"), ("shard", "--max", "1KB")])
def test_an_output_under_an_unknown_user_is_refused_not_written_in_a_folder_named_tilde(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]) -> None:
    # pathlib raised for `~nouser/x` ("unexpected RuntimeError"); os.path.expanduser keeps it, so shard wrote
    # ./~nouser/x in the working directory and convert said "create it first: mkdir -p '~nouser'".
    from safetensors.torch import save_file

    source = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4, 4)}, str(source))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    output = "~no-such-user-review11/out" + (".safetensors" if command[0] == "convert" else "")
    result = run_cli(command[0], str(source), *command[1:], "-o", output)
    assert result.exit_code == 2, result.stdout
    said = " ".join(result.stderr.split())
    assert f"{output}: ~no-such-user-review11 names no user of this machine" in said, said
    assert "mkdir" not in said and "Traceback" not in said
    assert list(work.iterdir()) == []
