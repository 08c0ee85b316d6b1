"""Round 15 of the common mistakes users make: the first five minutes, README and `--help` in hand.

Covers: JSON asked for as other tools ask (`--format json`, `-o json`, `--output-format=json`, `-j`), which Click
answered with another command's option (`inspect --format json`: "--format is an option of shard", a file format)
or, for convert, with `--to`, which then refused `json`; `plan-devices -o map.json` ("-o is an option of convert and
shard": plan-devices spelled its output --output only) and `-o json`, which wrote the map to a file named `json`;
from_pretrained's `--device-map` and `--torch-dtype` (no guess, or `--dtype, --force` for check-dtype's `--target`);
`--JSON`; `--fail-on error` given to check-dtype and plan-devices, whose levels were verdicts only (now taken);
the output given as a second argument, as cp takes it ("Missing option '--output'");
`--revision` of a repo not in the cache, said as "revision 'v2' of 'org/name' is not a local path"; `plan-devices
--local` on a machine without a GPU saying "no GPU was given"; inspect at 40 columns cutting its memory figures
(`553.… KB`) and config keys (`initializer_ran…`); git's and pip's `help inspect` and `version`, `-V`, and
`inspect --version` ("Possible options: --json, --revision, --verify").
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_cli, run_subprocess
from tests.helpers import save_tiny_bert as _tiny_bert


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded tiny Bert in a folder whose name holds a space and a non-ASCII letter."""
    folder = tmp_path_factory.mktemp("ux15") / "my mödel"
    _tiny_bert(folder)
    return folder


def _error_line(process: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a `python -m weightdoctor` run that exited 2 with nothing on stdout."""
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert process.returncode == 2 and process.stdout == "" and len(lines) == 1, (process.stdout, process.stderr)
    return lines[0]


def _suggested(line: str, after: str) -> list[str]:
    """The arguments of the `python -m weightdoctor ...` command a one-line error prints after `after`, as the shell
    splits them (the program name dropped; the command ends at the line's closing `(see ... --help)`)."""
    tail = line[line.index(after) + len(after):]
    tail = re.sub(r" \(see [^()]*--help\)$", "", tail)
    words = shlex.split(tail)
    assert words[:3] == ["python", "-m", "weightdoctor"], line
    return words[3:]


@pytest.mark.parametrize(("typed", "command"), [
    (["--format", "json"], "inspect"),
    (["--format=JSON"], "inspect"),
    (["-o", "json"], "inspect"),
    (["--output-format", "json"], "check-dtype"),
    (["-f", "json"], "check-dtype"),
    (["-j"], "check-dtype"),
])
def test_json_asked_as_other_tools_ask_names_the_json_flag(model: Path, typed: list[str], command: str) -> None:
    """`inspect x --format json` said "--format is an option of shard" (shard's --format is safetensors or bin);
    `-f json`, `-j`, `--output-format json` said nothing of --json. The command printed runs and prints JSON."""
    result = run_subprocess(command, model, *typed)
    line = _error_line(result)
    assert f"{command} prints its report as one JSON object on stdout with --json: " in line, line
    assert "is an option of shard" not in line and "convert and shard" not in line
    words = _suggested(line, "with --json: ")
    assert words == [command, str(model), "--json"]
    again = run_subprocess(*words)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["source"] == str(model)


def test_json_asked_of_diff_keys_and_convert_keeps_their_arguments(model: Path, tmp_path: Path) -> None:
    """`diff-keys A B --format=json` ("--format is an option of shard"), `convert x -o out --format json` ("convert
    calls it --to", and `--to json` was then refused): the command printed keeps every other argument."""
    line = _error_line(run_subprocess("diff-keys", model, model, "--format=json"))
    words = _suggested(line, "with --json: ")
    assert words == ["diff-keys", str(model), str(model), "--json"]
    assert json.loads(run_subprocess(*words).stdout)["matched"] > 0

    output = tmp_path / "out dir"
    line = _error_line(run_subprocess("convert", model, "-o", output, "--format", "json", "--dry-run"))
    assert "convert calls it --to" not in line
    words = _suggested(line, "with --json: ")
    assert words == ["convert", str(model), "-o", str(output), "--dry-run", "--json"]
    assert json.loads(run_subprocess(*words).stdout)["dry_run"] is True


@pytest.mark.parametrize("command", [("convert", "--to"), ("shard", "--format")])
def test_json_as_the_file_format_says_weights_are_not_json(model: Path, tmp_path: Path,
                                                           command: tuple[str, str]) -> None:
    """`convert --to json` / `shard --format json` said only "choose one of safetensors, bin"."""
    name, option = command
    line = one_error_line(run_cli(name, str(model), "-o", str(tmp_path / "o"), "--max", "1GB", option, "JSON")
                          if name == "shard" else run_cli(name, str(model), "-o", str(tmp_path / "o"), option, "json"))
    assert line.endswith("choose one of safetensors, bin; weights are not written as JSON: --json prints the report "
                         "as one JSON object on stdout"), line
    assert not (tmp_path / "o").exists()


def test_plan_devices_takes_dash_o_and_refuses_a_map_named_json(model: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """convert and shard write to `-o`; plan-devices took `--output` only ("-o is an option of convert and shard").
    `--output json` (JSON output asked for) wrote the device map to a file named `json`."""
    written = tmp_path / "device map.json"
    result = run_cli("plan-devices", str(model), "--gpu", "1GB", "-o", str(written))
    assert result.exit_code == 0, result.stderr
    assert json.loads(written.read_text()) == {"": 0}

    monkeypatch.chdir(tmp_path)
    for typed in (["-o", "json"], ["--output", "JSON"]):
        line = one_error_line(run_cli("plan-devices", str(model), "--gpu", "1GB", *typed))
        assert line == (f"error: --output {typed[1]!r}: give a file name, e.g. device_map.json (--json prints the "
                        "plan on stdout)")
        assert not (tmp_path / typed[1]).exists()


@pytest.mark.parametrize(("command", "typed", "said"), [
    (("plan-devices",), "--device-map", "plan-devices takes from_pretrained's device_map strings as --strategy (auto, "
     "balanced, balanced_low_0, sequential), and checks a hand-written device map with --map FILE"),
    (("plan-devices",), "--device_map", "plan-devices takes from_pretrained's device_map strings as --strategy"),
    (("convert", "-o", "{tmp}/o"), "--torch-dtype", "convert calls it --dtype"),
    (("plan-devices",), "--torch_dtype", "plan-devices calls it --dtype"),
    (("check-dtype",), "--torch-dtype", "check-dtype calls it --target"),
    (("inspect",), "--JSON", "options are written in lower case: --json"),
    (("check-dtype",), "--Target", "options are written in lower case: --target"),
])
def test_from_pretrained_argument_names_say_the_option_here(model: Path, tmp_path: Path, command: tuple[str, ...],
                                                            typed: str, said: str) -> None:
    """`--device-map auto` and `--JSON` got no guess; `--torch-dtype` got "Possible options: --dtype, --force" or,
    for check-dtype (whose option is --target), nothing."""
    name, *rest = command
    args = [word.replace("{tmp}", str(tmp_path)) for word in rest]
    line = one_error_line(run_cli(name, str(model), *args, typed, "fp16" if "dtype" in typed.lower() else "auto"))
    assert f"No such option: {typed}; {said}" in line, line
    assert "Possible options" not in line


@pytest.mark.parametrize(("command", "typed"), [
    (("check-dtype", "--target", "fp16"), "error"), (("check-dtype", "--target", "fp16"), "warn"),
    (("plan-devices", "--gpu", "1GB"), "error"), (("plan-devices", "--gpu", "1GB"), "Warning"),
])
def test_fail_on_a_severity_of_another_command_is_taken_here_too(model: Path, command: tuple[str, ...],
                                                                 typed: str) -> None:
    """inspect and diff-keys take info / warn / error; `check-dtype --fail-on error` was refused ("choose one of
    unsafe, lossy; check-dtype's levels are its verdicts"), as was `plan-devices --fail-on error`. Every command takes
    the severities now (tests/test_fail_on_uniform.py holds what each level means); `Warning` is still a typo."""
    name, *rest = command
    result = run_cli(name, str(model), *rest, "--fail-on", typed, "--json")
    if typed == "Warning":
        assert one_error_line(result).endswith("did you mean 'warn'?")
        return
    assert result.exit_code in (0, 1) and "error:" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    if name == "check-dtype":  # lossy is warn, unsafe error
        worst = {"safe": -1, "lossy": 1, "unsafe": 2}[data["targets"]["fp16"]["verdict"]]
    else:
        worst = {"fits-on-gpus": -1, "does-not-fit": 2}[data["verdict"]]
    assert result.exit_code == int(worst >= {"warn": 1, "error": 2}[typed])
    # A mistyped level of its own still gets the close name.
    assert one_error_line(run_cli(name, str(model), *rest, "--fail-on", "unsaf" if name == "check-dtype" else
                                  "nofit")).endswith("did you mean 'unsafe'?" if name == "check-dtype" else
                                                     "did you mean 'no-fit'?")


@pytest.mark.parametrize("command", [("convert", "--dtype", "fp16"), ("shard", "--max", "1GB")])
def test_output_given_as_a_second_argument_says_dash_o(model: Path, tmp_path: Path, command: tuple[str, ...]) -> None:
    """`convert model out.safetensors` (as cp takes it) said "Missing option '--output' / '-o'."; the command it
    prints now, pasted, writes there."""
    name, *rest = command
    output = tmp_path / "out dir.safetensors" if name == "convert" else tmp_path / "shards"
    line = _error_line(run_subprocess(name, model, output, *rest))
    assert f"{name} takes its output as -o OUTPUT, not as a second argument: " in line, line
    words = _suggested(line, "not as a second argument: ")
    assert words == [name, str(model), "-o", str(output), *rest]
    assert run_subprocess(*words).returncode == 0
    assert output.exists()
    # Without a second word it is still Click's missing option.
    assert "Missing option '--output' / '-o'" in one_error_line(run_cli(name, str(model), *rest))


def test_a_revision_of_a_repo_not_cached_is_not_called_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "revision 'v2' of 'acme/nomodel' is not a local path and is not in the Hugging Face cache" (round 10
    fixed the sentence for a cached repo only); a hf:// address still reads as the repo it names."""
    (tmp_path / "hub").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = one_error_line(run_cli("inspect", "acme/nomodel", "--revision", "v2"))
    fetch = "; download it with `hf download acme/nomodel --revision v2` (with HF_HUB_OFFLINE unset)"
    assert line == (f"error: 'acme/nomodel' is not a local path, and revision 'v2' of it is not in the Hugging Face "
                    f"cache at {tmp_path / 'hub'} (HF_HUB_OFFLINE is set){fetch}")
    line = one_error_line(run_cli("inspect", "hf://acme/nomodel@v2"))
    assert line == (f"error: hf://acme/nomodel@v2: revision 'v2' of 'acme/nomodel' is not in the Hugging Face cache "
                    f"at {tmp_path / 'hub'} (HF_HUB_OFFLINE is set){fetch}")


def test_plan_devices_local_without_a_gpu_says_none_was_found(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--local` on a machine without CUDA: "fits on the CPU (no GPU was given: ...)", though no GPU option exists
    with --local; a run with --cpu only still says none was given."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = run_cli("plan-devices", str(model), "--local")
    assert result.exit_code == 0, result.stderr
    assert "verdict: fits on the CPU (--local found no GPU on this machine: the model runs on the CPU)" in result.stdout
    result = run_cli("plan-devices", str(model), "--cpu", "1GB")
    assert "verdict: fits on the CPU (no GPU was given: the model runs on the CPU)" in result.stdout


def test_inspect_at_40_columns_cuts_no_figure_or_config_key(model: Path) -> None:
    """At 40 columns the memory table read `553.… KB` in four of five cells and the config panel
    `initializer_ran…`; at 80 the memory table keeps its one row."""
    from weightdoctor.units import format_bytes

    memory = json.loads(run_subprocess("inspect", model, "--json").stdout)["memory"]
    narrow = run_subprocess("inspect", model, env={"COLUMNS": "40", "TERM": "dumb"})
    assert narrow.returncode == 0, narrow.stderr
    assert "…" not in narrow.stdout.split("modules")[0]
    for dtype, size in memory.items():
        assert re.search(rf"^ {dtype}\s+│\s+{re.escape(format_bytes(size))}\s*$", narrow.stdout, re.M), narrow.stdout
    # The config panel's two columns, each read down its lines (a folded key or value goes on below).
    panel = narrow.stdout.split("config.json")[1].split("╰")[0].splitlines()[1:]
    start = panel[0].index("bert")  # model_type's value: where the value column starts
    keys = "".join(line[2:start].strip() for line in panel)
    values = "".join(line[start:].strip(" │") for line in panel)
    assert "initializer_rangemax_position_embeddings" in keys, panel
    assert "BertForSequenceClassification" in values, panel

    wide = run_subprocess("inspect", model, env={"COLUMNS": "80", "TERM": "dumb"})
    header = next(line for line in wide.stdout.splitlines() if "fp32 ┃" in line)
    assert header.split() == ["fp32", "┃", "fp16", "┃", "bf16", "┃", "int8", "┃", "int4"]


@pytest.mark.parametrize(("typed", "said"), [
    (["help", "inspect"], "No such command 'help': {p} inspect --help shows its help"),
    (["help"], "No such command 'help': {p} --help lists the commands, {p} COMMAND --help shows one"),
    (["version"], "No such command 'version': {p} --version prints it"),
    (["inspect", "x", "--version"], "No such option: --version; --version is an option of {p} itself: {p} --version"),
    (["-V"], "No such option: -V; {p} --version prints the version"),
])
def test_help_and_version_as_git_and_pip_spell_them(typed: list[str], said: str, tmp_path: Path) -> None:
    """`weightdoctor help inspect` and `weightdoctor version` said "No such command"; `inspect --version` "Possible
    options: --json, --revision, --verify". The command each names runs."""
    line = _error_line(run_subprocess(*typed, cwd=tmp_path))
    assert said.format(p="python -m weightdoctor") in line, line
    shown = run_subprocess(*(["inspect", "--help"] if "inspect --help" in line else ["--version"] if "--version" in
                             line else ["--help"]), cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.strip(), shown.stderr


def test_the_exit_codes_said_everywhere_give_diff_keys_its_default_fail_on(model: Path, tmp_path: Path) -> None:
    """README's exit-code table, docs/exit-codes.md and `weightdoctor --help` said 0 when nothing reaches --fail-on,
    "or no --fail-on given"; `diff-keys A B` without it exits 1 on a difference of severity error (its default)."""
    from tests.helpers import REPO_ROOT

    ddp = tmp_path / "ddp.safetensors"
    assert run_cli("convert", str(model), "-o", str(ddp), "--add-prefix", "module.").exit_code == 0
    result = run_cli("diff-keys", str(ddp), str(model))
    assert result.exit_code == 1 and "worst severity: error" in result.stdout
    assert run_cli("diff-keys", str(ddp), str(model), "--fail-on", "error").exit_code == 1

    readme = (REPO_ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| 0 | healthy"))
    assert "except in `diff-keys`, whose `--fail-on` is `error` by default" in row
    docs = (REPO_ROOT / "docs" / "exit-codes.md").read_text()
    assert "(or no `--fail-on` given)" not in docs
    assert "except to `diff-keys`, whose `--fail-on` is `error` by default" in docs
    shown = re.sub(r"\s+", " ", run_subprocess("--help", env={"COLUMNS": "200"}).stdout)
    assert "1 findings at or above --fail-on (diff-keys: error unless given; or a failed --verify or --map check)" \
        in shown


def test_the_subfolder_a_folder_error_points_at_pastes_as_one_word(model: Path, tmp_path: Path) -> None:
    """`inspect 'root two'` (the weights one folder down) ended "point at one, e.g. root two/my mödel": pasted after
    `weightdoctor inspect`, two words. It is quoted as every other command a message prints, and reads when pasted."""
    import shutil

    root = tmp_path / "root two"
    shutil.copytree(model, root / model.name)
    line = _error_line(run_subprocess("inspect", "root two", cwd=tmp_path))
    assert line.endswith("weights are in subfolders (my mödel/): point at one, e.g. 'root two/my mödel'"), line
    pasted = run_subprocess("inspect", *shlex.split(line.rsplit("e.g. ", 1)[1]), "--json", cwd=tmp_path)
    assert pasted.returncode == 0, pasted.stderr
    assert json.loads(pasted.stdout)["num_tensors"] > 0


def test_revision_b_ignored_on_a_local_b_is_named_as_typed(model: Path) -> None:
    """`diff-keys A B --revision-b main` with B a folder warned "B: --revision main ignored": no --revision was typed.
    --revision alone still names --revision for both sides."""
    result = run_cli("diff-keys", str(model), str(model), "--revision", "v1", "--revision-b", "main", "--json")
    assert json.loads(result.stdout)["warnings"] == [
        f"A: --revision v1 ignored: {model} is a local path, not a Hub repo id",
        f"B: --revision-b main ignored: {model} is a local path, not a Hub repo id"]
    shown = run_subprocess("diff-keys", model, model, "--revision-b", "main")  # the fast path, without Typer
    assert f"warning: B: --revision-b main ignored: {model} is a local path" in shown.stderr
    result = run_cli("diff-keys", str(model), str(model), "--revision", "v1", "--json")
    assert json.loads(result.stdout)["warnings"][1] == f"B: --revision v1 ignored: {model} is a local path, not a " \
        "Hub repo id"


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_keep_fp32_help_says_it_needs_dtype(model: Path, tmp_path: Path, command: str) -> None:
    """`--help` said "Keep tensors whose name matches in fp32." and nothing of --dtype, which the command requires
    with it (README: "`--keep-fp32 REGEX` (with `--dtype`)")."""
    shown = re.sub(r"[\s│]+", " ", run_subprocess(command, "--help", env={"COLUMNS": "200"}).stdout)
    assert "--keep-fp32 REGEX With --dtype: keep tensors whose name matches in fp32." in shown
    extra = ["--max", "1GB"] if command == "shard" else []
    line = one_error_line(run_cli(command, str(model), "-o", str(tmp_path / "o"), *extra, "--keep-fp32", "LayerNorm"))
    assert "--keep-fp32 keeps the tensors it matches in fp32 while --dtype casts the others: give --dtype too" in line
