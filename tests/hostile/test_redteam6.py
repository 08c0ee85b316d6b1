"""Hostile or absurd command-line arguments and environments found by the sixth red-team round: each must exit 2
with one line naming the option (or print its report), with no traceback, fast, and never write a surprise file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, run_cli, run_json

NAMES = ("model.layer.0.weight", "model.layer.1.weight", "lm_head.weight")


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    """A tiny GPT-2 folder: a config transformers can build on the meta device, and a safetensors file."""
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({name: torch.ones(4, 4) for name in NAMES}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 100, "n_positions": 64,
        "architectures": ["GPT2LMHeadModel"]}))
    return folder


def _run(*args: str | Path, env: dict[str, str] | None = None, close: tuple[int, ...] = (),
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m weightdoctor ARGS` with the descriptors in `close` closed, as `>&-` / `2>&-` leave them."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}

    def close_descriptors() -> None:
        for fd in close:
            os.close(fd)

    return subprocess.run(
        [sys.executable, "-m", "weightdoctor", *map(str, args)], env=full_env, cwd=cwd or REPO_ROOT, text=True,
        stdout=None if 1 in close else subprocess.PIPE, stderr=None if 2 in close else subprocess.PIPE,
        preexec_fn=close_descriptors if close else None, timeout=120, check=False,
    )


@pytest.mark.parametrize("command", [["diff-keys", "{a}", "{a}", "--json"], ["inspect", "{a}"]])
def test_a_closed_stdout_is_one_line_and_exit_2(model: Path, command: list[str]) -> None:
    """`weightdoctor ... >&-` leaves `sys.stdout` None: the fast path died with an uncaught AttributeError
    traceback and exit 1 (read as "findings"); Typer's commands said "unexpected AttributeError"."""
    args = [c.format(a=model / "model.safetensors") for c in command]
    result = _run(*args, close=(1,))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: stdout is closed: the report has nowhere to go (redirect it, e.g. >/dev/null)"]


def test_a_closed_stderr_keeps_the_exit_code_of_an_error(model: Path) -> None:
    """With stderr closed, writing the error line raised AttributeError: exit 1 ("findings") instead of 2."""
    for args in (["diff-keys", model / "model.safetensors", model / "absent.safetensors", "--json"],
                 ["inspect", model / "absent.safetensors", "--json"]):
        result = _run(*args, close=(2,))
        assert result.returncode == 2 and result.stdout == ""


@pytest.mark.parametrize("columns", ["0", "1"])
def test_a_zero_or_one_column_terminal_still_prints_the_report(model: Path, columns: str) -> None:
    """COLUMNS=0 made Rich lay the report out 0 columns wide: inspect, diff-keys and --help printed nothing and
    exited 0; COLUMNS=1 printed the panel's corners only."""
    path = model / "model.safetensors"
    inspect = _run("inspect", path, "--all", env={"COLUMNS": columns})
    assert inspect.returncode == 0 and inspect.stderr == ""
    # The names are wrapped inside their table cells, 40 columns wide.
    cells = "".join(line.split("│")[1].strip() for line in inspect.stdout.splitlines() if line.count("│") > 2)
    assert all(name in cells for name in NAMES), inspect.stdout
    diff = _run("diff-keys", path, path, env={"COLUMNS": columns})
    assert diff.returncode == 0 and "3 keys" in diff.stdout, diff.stdout
    usage = _run("inspect", "--help", env={"COLUMNS": columns})
    assert usage.returncode == 0 and "--filter" in usage.stdout, usage.stdout


def test_a_kv_cache_past_what_a_float_holds_is_printed(model: Path) -> None:
    """`--kv-cache --batch 10**400`: format_bytes called float() on the estimate and raised OverflowError half
    way through the report (exit 2, "unexpected OverflowError"); 10**18 x 10**30 tokens printed 40 digits."""
    huge = run_cli("plan-devices", model, "--gpu", "1GB", "--kv-cache", "--batch", str(10**400), "--seq-len", "3")
    assert huge.exit_code == 0, huge.stderr
    line = next(line for line in huge.stdout.splitlines() if line.startswith("KV cache:"))
    assert line.startswith("KV cache: 3.07e+403 B for batch 1000"), line
    large = run_cli("plan-devices", model, "--gpu", "1GB", "--kv-cache", "--batch", str(10**18),
                    "--seq-len", str(10**30))
    assert large.exit_code == 0, large.stderr
    assert "KV cache: 1.02e+36 PB for batch" in large.stdout


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--seq-len", "0", "error: --seq-len 0: the KV cache needs at least 1 token"),
    ("--seq-len", "-7", "error: --seq-len -7: the KV cache needs at least 1 token"),
    ("--batch", "0", "error: --batch 0: the KV cache needs at least 1 sequence"),
    ("--batch", "-3", "error: --batch -3: the KV cache needs at least 1 sequence"),
])
def test_a_kv_cache_of_no_tokens_is_refused_naming_the_option(model: Path, option: str, value: str,
                                                                message: str) -> None:
    """`--seq-len 0` was read as "not given" (the config's 64 tokens were estimated, exit 0); a batch of 0 was
    refused after the model was built, in a line naming neither option alone."""
    result = run_cli("plan-devices", model, "--gpu", "1GB", "--kv-cache", option, value, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [message]


def test_a_head_of_a_trillion_labels_is_refused_before_it_is_built(model: Path) -> None:
    """`--num-labels 10**12`: transformers' config names every label (id2label, label2id), so the run filled the
    memory for minutes; 10 million took 15 s and 2 GB. Refused above a million, before anything is read."""
    started = time.perf_counter()
    for labels in (str(10**12), str(10**400), "0", "-1"):
        result = run_cli("diff-keys", model, "--model-class", "GPT2ForSequenceClassification",
                         "--num-labels", labels, "--json")
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.splitlines() == [f"error: --num-labels {labels}: give 1 to 1,000,000 labels"]
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("command", [["diff-keys"], ["plan-devices", "--gpu", "1GB"]])
def test_an_empty_model_class_is_refused(model: Path, command: list[str]) -> None:
    """`--model-class ""` (an unset `$CLASS`) was taken as "no class given": the config's own class was built and
    reported (exit 1 for diff-keys, 0 for plan-devices) as if it had been asked for."""
    result = run_cli(command[0], model, *command[1:], "--model-class", "", "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: --model-class is empty: give a transformers class")


@pytest.mark.parametrize("command", [
    ["convert", "{src}", "-o", "-"], ["shard", "{src}", "--output=-", "--max", "1GB"],
    ["plan-devices", "{dir}", "--gpu", "1GB", "--output", "-"],
    ["plan-devices", "{dir}", "--gpu", "1GB", "--output", ""],
])
def test_an_output_of_dash_or_nothing_writes_no_file(model: Path, tmp_path: Path, command: list[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o -` reads as stdout to most tools: convert and shard wrote a file named "-" beside the command, and
    plan-devices wrote its device map there; `plan-devices --output ""` said "output exists and is a folder"."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = [c.format(src=model / "model.safetensors", dir=model) for c in command]
    result = run_cli(*args, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "--output" in result.stderr, result.stderr
    assert "give a file" in result.stderr
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("command", [["diff-keys", "{a}", "{a}"], ["convert", "{a}", "-o", "{out}"]])
def test_renames_that_double_every_name_stop_at_the_name_limit(model: Path, tmp_path: Path,
                                                               command: list[str]) -> None:
    """24 `--rename '(.*)=\\1\\1'` doubled each name 24 times: 6 GB and over two minutes (killed) before any
    output. A rename making a name longer than a file's name may be is refused, at the step that makes it."""
    args = [c.format(a=model / "model.safetensors", out=tmp_path / "out.safetensors") for c in command]
    started = time.perf_counter()
    result = run_cli(*args, *["--rename", r"(.*)=\1\1"] * 24, "--json")
    assert time.perf_counter() - started < 10
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        r"error: --rename '(.*)=\1\1' makes a name of 1,310,720 characters (the limit is 1,048,576): no model "
        "names a tensor so"]
    assert not (tmp_path / "out.safetensors").exists()


def test_the_rename_limit_is_the_readers() -> None:
    from weightdoctor.checkpoint.reader import MAX_NAME_CHARS
    from weightdoctor.renames import MAX_NAME_CHARS as RENAME_LIMIT

    assert RENAME_LIMIT == MAX_NAME_CHARS


def test_the_entry_width_bounds_are_the_consoles() -> None:
    from weightdoctor import entry
    from weightdoctor.render.console import MAX_WIDTH, MIN_WIDTH

    assert (entry._MIN_WIDTH, entry._MAX_WIDTH) == (MIN_WIDTH, MAX_WIDTH)


@pytest.mark.parametrize("columns", ["100000", "9" * 5000])
def test_a_terminal_wider_than_a_report_needs_is_laid_out_at_most_1000_columns(model: Path, columns: str) -> None:
    """COLUMNS=100000 drew every panel 100,000 columns wide: 3 MB of padding for a three-tensor report (and a
    5,000-digit COLUMNS is past what int() reads)."""
    path = model / "model.safetensors"
    for args, said in ((("inspect", path, "--all"), NAMES), (("diff-keys", path, path), ["3 keys"]),
                       (("inspect", "--help"), ["--filter"])):
        result = _run(*args, env={"COLUMNS": columns})
        assert result.returncode == 0 and result.stderr == "", result.stderr
        widths = [len(line) for line in result.stdout.splitlines()]
        assert 100 < max(widths) <= 1000, (args, max(widths))
        assert all(text in result.stdout for text in said), result.stdout[:2000]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_map_that_never_ends_is_read_bounded(model: Path) -> None:
    """`plan-devices --map /dev/zero` read the "file" whole: the memory filled until the process was killed
    (exit 137). A map is read up to the size limit of a config, then refused."""
    started = time.perf_counter()
    result = run_cli("plan-devices", model, "--gpu", "1GB", "--map", "/dev/zero", "--json")
    assert time.perf_counter() - started < 20
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: /dev/zero: is more than 100,000,000 bytes, more than any device map holds; not read"]


def test_a_device_map_from_process_substitution_is_still_read(model: Path, tmp_path: Path) -> None:
    """The bounded read still reads a FIFO (`--map <(jq ...)`), which a regular-file check would refuse."""
    fifo = tmp_path / "map.json"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=('{"": 0}',))
    writer.start()
    try:
        result = run_cli("plan-devices", model, "--gpu", "1GB", "--map", fifo, "--json")
    finally:
        writer.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["device_map"] == {"": 0}


def test_an_empty_dtype_is_refused_by_plan_devices_as_by_convert(model: Path) -> None:
    """`plan-devices --dtype ""` was taken as "not given" and planned the checkpoint's own dtype (exit 0), while
    `convert --dtype ""` refuses it."""
    result = run_cli("plan-devices", model, "--gpu", "1GB", "--dtype", "", "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: unknown dtype '': expected one of fp64, fp32, fp16, bf16, int8, int4, fp8"]


@pytest.mark.parametrize("command", [["inspect", "{a}", "--json"], ["diff-keys", "{a}", "{a}", "--json"]])
def test_a_reader_that_goes_away_is_exit_141_on_both_paths(model: Path, command: list[str]) -> None:
    """`weightdoctor inspect x --json | head -c 1`: Typer caught the BrokenPipeError and exited 1, read as
    "findings" (the fast path's diff-keys already exited 141); nothing may be printed either way."""
    args = [c.format(a=model / "model.safetensors") for c in command]
    process = subprocess.Popen(
        [sys.executable, "-m", "weightdoctor", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}, cwd=REPO_ROOT)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the child writes its first byte: it starts in a fraction of a second
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert stderr == b""


def test_a_key_of_sixty_thousand_segments_is_answered_at_once(tmp_path: Path) -> None:
    """`--key a.a.a...` (60,000 segments, as long as one argument may be): every dotted prefix of the key was
    joined anew to be looked up, 11 s before saying that `a` is no entry. Dotted entries still match longest
    first, and a digit still reaches an int key."""
    path = tmp_path / "nested.bin"
    torch.save({"model": {"ema.v1": {"w": torch.zeros(2)}, "ema": {"v1.x": {"w": torch.ones(2)}}},
                "hyper": {320: {"w": torch.zeros(3)}}}, path)
    started = time.perf_counter()
    long_key = "a." * 60_000
    result = run_cli("inspect", path, "--key", long_key, "--json")
    assert time.perf_counter() - started < 5
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.rstrip().endswith("no entry 'a' (entries: model, hyper)")
    code, report = run_json("inspect", path, "--key", "model.ema.v1")
    assert code == 0 and [t["shape"] for t in report["tensors"]] == [[2]]
    code, report = run_json("inspect", path, "--key", "hyper.320")
    assert code == 0 and [t["shape"] for t in report["tensors"]] == [[3]]


def test_an_empty_hist_is_refused_before_any_value_is_read(model: Path) -> None:
    """`inspect --hist ""` implied --stats, read every value, and printed no histogram (exit 0)."""
    result = run_cli("inspect", model, "--hist", "")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: --hist is empty: give a tensor name or a regular expression (at most 8 tensors are shown)"]


def test_a_size_that_rounds_to_zero_is_not_read_as_no_limit(model: Path, tmp_path: Path) -> None:
    """`shard --max 1e-400GB`: float() reads 1e-400 as 0, and 0 means "merge into one file", so a request for
    tiny shards wrote one file (exit 0). It is a size under one byte, refused as 0.5B is."""
    out = tmp_path / "out"
    result = run_cli("shard", model / "model.safetensors", "-o", out, "--max", "1e-400GB", "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: invalid value for '--max': size '1e-400GB' is under one byte: give at least 1 byte (0 means none)"]
    assert not out.exists()
    from weightdoctor.units import parse_size

    assert parse_size("0GB") == parse_size("0.0e10MB") == parse_size("-0GB") == 0


def test_thousands_of_gpus_are_refused_before_the_model_is_built(model: Path) -> None:
    """5,000 `--gpu 2KB` took 25 s to place a 172K-parameter model (the placement is quadratic in devices); a
    command line holds 170,000 of them. At most 1,024 GPUs are planned for."""
    started = time.perf_counter()
    result = run_cli("plan-devices", model, *["--gpu", "2KB"] * 1025, "--json")
    assert time.perf_counter() - started < 5
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["error: 1,025 --gpu options: plan for at most 1,024 GPUs (one per --gpu)"]
    assert run_cli("plan-devices", model, *["--gpu", "1GB"] * 16, "--json").exit_code == 0
