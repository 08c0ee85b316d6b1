"""Robustness sweep: every command over foreign formats, damaged files and unusual (but valid) checkpoints.

The contract checked for each run: no traceback; a bad input exits 2 with exactly one stderr line that
names the file and says what is wrong, and nothing on stdout; a valid input exits 0 or 1 and `--json`
prints one valid JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.sweep_inputs import build_bad_inputs, build_odd_checkpoints
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_bad_inputs(tmp_path_factory.mktemp("sweep-bad"))


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_odd_checkpoints(tmp_path_factory.mktemp("sweep-odd"))


def _command(name: str, source: Path, reference: Path, out: Path) -> list[str]:
    """The argument list of `name` run over `source` (valid options, so only the source can be wrong)."""
    if name == "diff-keys":
        return ["diff-keys", str(source), str(reference)]
    if name == "plan-devices":
        return ["plan-devices", str(source), "--cpu", "1GB"]
    if name == "convert":
        return ["convert", str(source), "-o", str(out / "converted.safetensors")]
    if name == "shard":
        return ["shard", str(source), "-o", str(out / "sharded"), "--max", "20KB"]
    if name == "inspect-stats":
        return ["inspect", str(source), "--stats"]
    return [name, str(source)]


COMMANDS = ("inspect", "inspect-stats", "diff-keys", "plan-devices", "convert", "shard", "check-dtype")

# input name -> words the one-line error must contain
BAD_INPUTS: dict[str, str] = {
    "empty.bin": "empty (0 bytes)",
    "empty.safetensors": "empty (0 bytes)",
    "random.bin": "not a safetensors file nor a PyTorch pickle",
    "random.pt": "not a safetensors file nor a PyTorch pickle",
    "random.safetensors": "not a safetensors file",
    "model.gguf": "GGUF",
    "gguf-named.bin": "GGUF",
    "tf_model.h5": "HDF5",
    "model.onnx": "ONNX",
    "flax_model.msgpack": "Flax",
    "lfs-pointer.safetensors": "git lfs pull",
    "arr.npy": "NumPy .npy",
    "arr.npz": "NumPy .npz",
    "truncated.bin": "damaged or truncated",
    "other.json": "neither an index",
    "emptydir": "no weight file",
    "pipeline": "subfolders (text_encoder/, unet/)",
    "tf-checkpoint": "model.ckpt.index",
}


def _assert_one_line_error(result, path: Path, words: str) -> None:  # noqa: ANN001
    assert "Traceback" not in result.stderr + result.stdout
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # The path may be wrapped by the console only if it were long; the line names the file.
    assert path.name in lines[0], lines[0]
    assert words in lines[0], lines[0]
    assert "unexpected" not in lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_inputs_give_one_clear_line(command: str, bad: dict[str, Path], fx: dict[str, Path],
                                        tmp_path: Path) -> None:
    for name, words in BAD_INPUTS.items():
        for extra in ([], ["--json"]):
            out = tmp_path / f"{name}{len(extra)}"
            out.mkdir()
            args = _command(command, bad[name], fx["bert"], out)
            result = run_cli(*args, *extra)
            _assert_one_line_error(result, bad[name], words)
            assert list(out.iterdir()) == [], f"{command} {name} left output behind"


def test_foreign_format_names_the_format(bad: dict[str, Path]) -> None:
    result = run_cli("inspect", str(bad["model.gguf"]))
    # Read as GGUF (its header parsed), and refused for what is wrong with it: random bytes as its counts.
    assert result.exit_code == 2 and "GGUF header: " in result.stderr and "cannot fit" in result.stderr, result.stderr
    result = run_cli("inspect", str(bad["lfs-pointer.safetensors"]))
    assert "Git LFS pointer" in result.stderr


def test_pipeline_folder_lists_subfolders(bad: dict[str, Path]) -> None:
    result = run_cli("inspect", str(bad["pipeline"]))
    line = result.stderr.strip()
    assert result.exit_code == 2
    assert "weights are in subfolders (text_encoder/, unet/)" in line
    assert f"point at one, e.g. {bad['pipeline'] / 'text_encoder'}" in line
    # Following the hint works.
    assert run_cli("inspect", str(bad["pipeline"] / "unet")).exit_code == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_odd_but_valid_checkpoints(command: str, odd: dict[str, Path], fx: dict[str, Path], tmp_path: Path) -> None:
    for name, path in odd.items():
        out = tmp_path / name
        out.mkdir()
        result = run_cli(*_command(command, path, fx["bert"], out), "--json")
        assert "Traceback" not in result.stderr + result.stdout
        if command == "plan-devices" and name.startswith("zero-tensors"):
            _assert_one_line_error(result, path, "nothing to plan: the checkpoint holds no tensors and there is no")
            continue
        assert result.exit_code in (0, 1), (command, name, result.stderr)
        assert isinstance(json.loads(result.stdout), dict)


def test_zero_sized_dimension_stats(odd: dict[str, Path]) -> None:
    result = run_cli("inspect", str(odd["zero-dim.safetensors"]), "--stats", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    text = json.dumps(data)
    assert '"w"' in text


def test_empty_state_dict_reads_like_empty_safetensors(odd: dict[str, Path]) -> None:
    from_bin = json.loads(run_cli("inspect", str(odd["zero-tensors.bin"]), "--json").stdout)
    from_safetensors = json.loads(run_cli("inspect", str(odd["zero-tensors.safetensors"]), "--json").stdout)
    assert from_bin["num_tensors"] == from_safetensors["num_tensors"] == 0


def test_failed_bin_write_exits_2_without_aborting(fx: dict[str, Path], tmp_path: Path) -> None:
    # A .bin output abandoned mid-write used to abort the interpreter at exit (torch's C++ writer wrote
    # to its closed file: std::terminate, exit 134) after the error line; and a warning came before it.
    from tests.helpers import run_subprocess

    out = tmp_path / "out.bin"
    result = run_subprocess("convert", fx["files"] / "ddp-nested.pth", "-o", out, "--dtype", "fp16")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "would lose values" in lines[0] and "ddp-nested.pth" in lines[0], result.stderr
    assert "terminate" not in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_model_class_of_another_type_is_a_usage_error(fx: dict[str, Path]) -> None:
    for args in (["diff-keys", str(fx["gpt2"]), "--model-class", "BertModel"],
                 ["plan-devices", str(fx["gpt2"]), "--model-class", "BertModel", "--cpu", "1GB"]):
        result = run_cli(*args)
        _assert_one_line_error(result, fx["gpt2"], "BertModel needs a 'bert' config, but the config's model_type")


@pytest.mark.parametrize(("args", "words"), [
    (["inspect", "{bert}", "--sample", "many"], "Invalid value for '--sample'"),
    (["inspect"], "Missing argument 'source'"),
    (["inspect", "{bert}", "--no-such-option"], "No such option: --no-such-option"),
    (["convert", "{bert}"], "Missing option '--output'"),
    (["no-such-command"], "No such command 'no-such-command'"),
])
def test_click_usage_errors_are_one_line(args: list[str], words: str, fx: dict[str, Path]) -> None:
    result = run_cli(*[a.replace("{bert}", str(fx["bert"])) for a in args])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert "--help" in lines[0]


def test_help_and_version_unchanged() -> None:
    assert run_cli("--version").exit_code == 0
    result = run_cli("inspect", "--help")
    assert result.exit_code == 0 and "--stats" in result.stdout


def test_broken_pipe_on_stdout_is_quiet(fx: dict[str, Path]) -> None:
    # `weightdoctor inspect ... | head -1`: no traceback when the reader goes away.
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    command = (f"{sys.executable} -m weightdoctor inspect {fx['bert']} --all | head -c 1 > /dev/null; "
               "exit ${PIPESTATUS[0]}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert "Traceback" not in result.stderr, result.stderr
    # Not 1 (that means "findings") nor 2 (bad input): 128 + SIGPIPE, as Unix tools end, with nothing said.
    # (`head` may also have read everything before closing: then the command simply succeeds.)
    assert result.returncode in (141, 0) and result.stderr == "", (result.returncode, result.stderr)


def test_a_closed_stdout_ends_with_141(fx: dict[str, Path]) -> None:
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    proc = subprocess.Popen([sys.executable, "-m", "weightdoctor", "inspect", str(fx["bert"]), "--all"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 141 and stderr == "", stderr


def test_whole_pickled_model_is_refused_with_a_hint(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    result = run_cli("inspect", str(path))
    _assert_one_line_error(result, path, "nothing was unpickled (this looks like a whole pickled model")
    assert "save model.state_dict() instead" in result.stderr


def test_key_on_a_safetensors_checkpoint_is_a_usage_error(fx: dict[str, Path]) -> None:
    # --key used to be ignored silently for safetensors (and pickles without nesting were already refused).
    for command in (["inspect"], ["check-dtype"], ["plan-devices", "--cpu", "1GB"]):
        result = run_cli(command[0], str(fx["bert"]), *command[1:], "--key", "model.module")
        _assert_one_line_error(result, fx["bert"], "--key 'model.module' names an entry inside a PyTorch pickle")
    assert run_cli("inspect", str(fx["files"] / "ddp-nested.pth"), "--key", "model.module").exit_code == 0
