"""The contract a CI job relies on, across commands: `--json` parses, options that cannot apply are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, run_cli, run_subprocess

EXAMPLE = REPO_ROOT / "fixtures" / "example"

NAMES = ["módulo.pesos_ü.weight", "層.weight", "emoji_\U0001f600.bias"]


@pytest.fixture
def non_ascii(tmp_path: Path) -> Path:
    """A checkpoint whose tensor names and file name are not ASCII."""
    folder = tmp_path / "dïr"
    folder.mkdir()
    path = folder / "modèl.safetensors"
    save_file({name: torch.ones(4, 4) for name in NAMES}, str(path))
    return path


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
@pytest.mark.parametrize(
    "command",
    [["inspect"], ["diff-keys", "{empty}"], ["check-dtype"], ["convert", "-o", "{out}", "--dry-run"]],
    ids=["inspect", "diff-keys", "check-dtype", "convert"],
)
def test_json_parses_when_stdout_cannot_encode_the_names(
    non_ascii: Path, tmp_path: Path, encoding: str, command: list[str]
) -> None:
    # A latin-1 console or PYTHONIOENCODING=ascii: stdout writes what it cannot encode as `\xe8`, which is
    # no JSON escape; the names must come out as JSON's own \u escapes instead.
    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty))
    args = [command[0], str(non_ascii),
            *(a.format(empty=empty, out=tmp_path / "out.safetensors") for a in command[1:]), "--json"]
    proc = run_subprocess(*args, env={"PYTHONIOENCODING": encoding})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    text = json.dumps(data, ensure_ascii=False)
    assert sum(name in text for name in NAMES) >= 2  # convert names the first and last tensor only
    assert "dïr/modèl.safetensors" in text


def test_an_ascii_console_reads_the_glyphs_as_ascii_and_names_as_escapes(non_ascii: Path) -> None:
    """PYTHONIOENCODING=ascii: the reports' own arrows and signs printed as `\\u2192` and `\\xb1` (a table cell six
    characters wide for one); they read as ASCII now, while a tensor name keeps its exact escapes."""
    out = run_subprocess("check-dtype", EXAMPLE, env={"PYTHONIOENCODING": "ascii", "COLUMNS": "100"}).stdout
    assert "beyond +-65504 -> +-65504 below +-65520, +-inf from +-65520 (overflows)" in out
    assert "\\u" not in out and "\\x" not in out
    out = run_subprocess("inspect", non_ascii, env={"PYTHONIOENCODING": "ascii", "COLUMNS": "100"}).stdout
    assert "m\\xf3dulo.pesos_\\xfc.weight" in out and "4x4" in out


def test_an_ascii_console_never_shows_a_name_as_another(tmp_path: Path) -> None:
    """The console's handler writes the reports' glyphs as ASCII, names' characters included: `a×b.weight` printed
    as `axb.weight`, the name of another tensor, and `c→d` took a column's cell and one more. A name's character
    the console cannot encode is escaped before the table is sized, as any other."""
    save_file({"a\u00d7b.weight": torch.zeros(2, 2), "axb.weight": torch.ones(2, 2), "c\u2192d": torch.zeros(3)},
              str(tmp_path / "glyphs.safetensors"))
    out = run_subprocess("inspect", tmp_path / "glyphs.safetensors",
                         env={"PYTHONIOENCODING": "ascii", "COLUMNS": "100"}).stdout
    table = out[out.index("Tensors"):].splitlines()[1:]
    rows = [line for line in table if line.startswith("|")]
    assert {row.split("|")[1].strip() for row in rows} >= {"axb.weight", "a\\xd7b.weight", "c\\u2192d"}
    assert len({len(line) for line in table if line.startswith(("|", "+"))}) == 1  # every row as wide


@pytest.mark.parametrize(
    ("extra", "named"),
    [(["--strategy", "sequential"], "--strategy"), (["--strategy", "bogus"], "strategy 'bogus'"),
     (["--no-split", "BertLayer"], "--no-split"), (["--reserve", "500MB"], "--reserve")],
)
def test_plan_devices_map_refuses_options_it_would_ignore(tmp_path: Path, extra: list[str], named: str) -> None:
    # --map is checked as written against the full --gpu size: a strategy, no-split classes or a reserve would
    # change nothing while the JSON echoed them back as if they had been applied.
    device_map = tmp_path / "map.json"
    device_map.write_text('{"": 0}')
    result = run_cli("plan-devices", EXAMPLE, "--gpu", "1GB", "--map", device_map, *extra, "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and named in result.stderr
    # Without them (or with a reserve of zero however written), the same map is checked.
    for zero in ([], ["--reserve", "0GB"]):
        assert json.loads(run_cli("plan-devices", EXAMPLE, "--gpu", "1GB", "--map", device_map, *zero,
                                  "--json").stdout)["manual_map"] is True


@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "1MB"]], ids=["convert", "shard"])
def test_allow_overflow_without_dtype_is_refused(tmp_path: Path, command: list[str]) -> None:
    # Nothing is cast without --dtype, so --allow-overflow would be ignored: a typo'd cast must not pass.
    source = tmp_path / "in.safetensors"
    save_file({"w": torch.ones(2, 2)}, str(source))
    out = tmp_path / "out.safetensors" if command[0] == "convert" else tmp_path / "shards"
    result = run_cli(command[0], source, "-o", out, *command[1:], "--allow-overflow")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --allow-overflow lets --dtype cast values it cannot hold: give --dtype too"
    assert not out.exists()
    assert run_cli(command[0], source, "-o", out, *command[1:], "--allow-overflow", "--dtype", "fp16").exit_code == 0


@pytest.mark.parametrize(
    "command",
    [["convert", "--to", "bin"], ["shard", "--single", "--format", "bin"]],
    ids=["convert-folder", "shard-single"],
)
def test_metadata_into_one_bin_file_is_not_dropped_silently(tmp_path: Path, command: list[str]) -> None:
    # A .bin holds no metadata: convert to a .bin file already said so; a folder or one merged shard did not.
    source = tmp_path / "model"
    source.mkdir()
    save_file({"w": torch.ones(2, 2)}, str(source / "model.safetensors"))
    out = tmp_path / "out"
    result = run_cli(command[0], source, "-o", out, *command[1:], "--metadata", "run=42", "--json")
    assert result.exit_code == 0, result.stderr
    warning = "a .bin file holds no metadata: --metadata is ignored"
    assert warning in result.stderr
    assert warning in json.loads(result.stdout)["plan"]["warnings"]
    assert (out / "pytorch_model.bin").is_file()


def test_plan_devices_output_never_overwrites_a_weight_file_of_the_source(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(EXAMPLE, folder)
    weights = folder / "model.safetensors"
    before = weights.read_bytes()
    result = run_cli("plan-devices", folder, "--gpu", "1GB", "--output", weights)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: --output {weights} would overwrite an input; choose another file"
    assert weights.read_bytes() == before
    # A new file in the model folder is fine.
    assert run_cli("plan-devices", folder, "--gpu", "1GB", "--output", folder / "device_map.json").exit_code == 0
    assert json.loads((folder / "device_map.json").read_text()) == {"": 0}


def test_plan_devices_gpu_zero_is_refused() -> None:
    # `--gpu 0` is the index habit (CUDA_VISIBLE_DEVICES=0); as a size it planned a GPU of 0 bytes, exit 0.
    result = run_cli("plan-devices", EXAMPLE, "--gpu", "0", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: --gpu takes the memory of one GPU") and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("args", [["--gpu", "24"], ["--gpu", "24GB", "--gpu", "80"], ["--gpu", "1GB", "--cpu", "64"]])
def test_a_size_without_a_unit_under_a_kilobyte_is_refused(args: list[str]) -> None:
    # `--gpu 24` meant 24 GB and planned a 24-byte GPU; larger unit-less numbers stay bytes, as in accelerate.
    result = run_cli("plan-devices", EXAMPLE, *args, "--json")
    number = args[-1]
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"error: {args[-2]} {number} is {number} bytes: give a unit, e.g. {number}GB "
                                     f"(decimal) or {number}GiB (binary)")
    assert run_cli("plan-devices", EXAMPLE, "--gpu", "555955", "--json").exit_code == 0


@pytest.mark.parametrize(("size", "message"), [
    ("24.5", "error: --gpu 24.5 is 24 bytes: give a unit, e.g. 24.5GB (decimal) or 24.5GiB (binary)"),
    ("1e2", "error: --gpu 1e2 is 100 bytes: give a unit, e.g. 1e2GB (decimal) or 1e2GiB (binary)"),
    # str.isdigit() takes "²" as a digit, which int() refuses: it was an unexpected ValueError.
    ("\u00b2", "error: invalid value for '--gpu': cannot parse size '\u00b2': '\u00b2' is not a number"),
])
def test_a_unit_less_size_is_judged_by_its_value_not_its_characters(size: str, message: str) -> None:
    result = run_cli("plan-devices", EXAMPLE, "--gpu", size, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == message


@pytest.mark.parametrize(("args", "command"), [(["plan-devices", EXAMPLE, "--gpu"], "plan-devices"),
                                               (["inspect", EXAMPLE, "--fail-on"], "inspect")])
def test_an_option_without_its_value_names_the_command(args: list[str], command: str) -> None:
    # Click raises "requires an argument" without a context: the line named the root's help, not the command's.
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    line = result.stderr.strip()
    assert len(result.stderr.splitlines()) == 1
    assert f" {command}: Option '{args[-1]}' requires an argument." in line
    assert line.endswith(f" {command} --help)")


@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--stats"], ["check-dtype"]],
                         ids=["inspect", "inspect-stats", "check-dtype"])
def test_reader_warnings_go_to_stderr_not_into_the_tables(tmp_path: Path, command: list[str]) -> None:
    # "Data goes to stdout; progress bars, warnings and errors go to stderr" (README), as plan-devices,
    # diff-keys, convert and shard already did.
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.ones(4, 4)}, str(folder / "model.safetensors"))
    torch.save({"w": torch.ones(4, 4)}, folder / "pytorch_model.bin")
    result = run_cli(command[0], folder, *command[1:])
    assert result.exit_code == 0, result.stderr
    warning = "warning: pytorch_model.bin is ignored: model.safetensors comes first"
    assert warning in result.stderr
    assert "warning:" not in result.stdout and "is ignored" not in result.stdout


@pytest.mark.parametrize("command", ["inspect", "check-dtype", "diff-keys"])
def test_a_long_path_is_folded_in_the_summary_not_cut(tmp_path: Path, command: str) -> None:
    """At 40 columns the summary's source (diff-keys: A and B) ended `/tmp/…/fixture…`: a path is one word, which
    a grid column cut with an ellipsis. It folds, every character kept."""
    deep = tmp_path / "a_rather_long_folder_name_for_weights" / "and_another_one_below_it"
    deep.mkdir(parents=True)
    shutil.copy(EXAMPLE / "model.safetensors", deep / "model.safetensors")
    source = deep / "model.safetensors"
    args = [command, source] + ([source] if command == "diff-keys" else [])
    out = run_subprocess(*args, env={"COLUMNS": "40"}).stdout
    panel = out[:out.index("╰")]
    assert "…" not in panel, panel
    assert str(source) in "".join(panel.replace("│", "").split())


@pytest.mark.parametrize("command", [
    ["inspect"], ["check-dtype"], ["plan-devices", "--gpu", "1GB"], ["convert", "-o", "{tmp}/out.safetensors"],
    ["shard", "--max", "1MB", "-o", "{tmp}/shards"], ["diff-keys", str(EXAMPLE)],
], ids=["inspect", "check-dtype", "plan-devices", "convert", "shard", "diff-keys"])
def test_a_home_folder_of_no_known_user_is_a_missing_path_not_a_crash(tmp_path: Path, command: list[str]) -> None:
    # pathlib's expanduser() raises RuntimeError for `~nouser/x`: it reached the user as "unexpected RuntimeError".
    source = "~no-such-user-weightdoctor/x"
    args = [command[0], source, *(a.format(tmp=tmp_path) for a in command[1:])]
    result = run_cli(*args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip() == f"error: {source}: no such file or directory"
