"""Round 10 of the common mistakes users make, and the one line weightdoctor answers each with.

Covers: a Hub page's address, an `hf://` URI or another URL pasted as the source or --config (said of the address
and the repo it names, or the repo id to type; was "no such file or directory"); a mistyped weight file or
config.json given to plan-devices or --config (was looked up on the Hub); `shard --max 10` without a unit (10 bytes:
a shard per tensor); an option of another command (`inspect --target`: which command takes it, or this command's
name for it; Click guessed `--stats`); `--to` / `--format` typed in capitals, without its last letter or as a suffix
(`pt`); Ctrl-C swallowed by a library's import (was "unexpected RecursionError", exit 2; now "interrupted", 130); a
mistyped --revision of a cached repo (the ref meant); `--strip-prefix bert` for `bert.` (names starting with '.'); a
size the shell split in two (`--gpu 24 GB`); --help broken mid-sentence at 80 columns; `--help | head` exiting 1;
`-h`; a shell glob of shards given to a one-checkpoint command (`inspect model-*.safetensors`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, copy_example, run_cli, run_subprocess


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


# Hub addresses are read as the repo they name (huggingface_hub's parse_hf_uri; hub10): offline and uncached, the
# error names the address as typed and the repo, revision, folder or file it was read as. Addresses it cannot parse
# and other URLs get the repo id to type, or "download it first".
_NOT_CACHED = "is not in the Hugging Face cache at"


@pytest.mark.parametrize(("url", "said"), [
    ("https://huggingface.co/google-bert/bert-base-uncased", f"'google-bert/bert-base-uncased' {_NOT_CACHED}"),
    ("https://huggingface.co/bert-base-uncased/tree/main",
     "a web address, not a local path: give the repo id instead: bert-base-uncased"),
    ("https://huggingface.co/org/name/tree/v1.0", f"revision 'v1.0' of 'org/name' {_NOT_CACHED}"),
    ("https://huggingface.co/stabilityai/sd-turbo/tree/main/unet",
     f"folder 'unet' of revision 'main' of 'stabilityai/sd-turbo' {_NOT_CACHED}"),
    ("https://huggingface.co/org/name/tree/refs%2Fpr%2F1", f"revision 'refs/pr/1' of 'org/name' {_NOT_CACHED}"),
    ("huggingface.co/org/name", "a web address, not a local path: give the repo id instead: org/name"),
    ("hf://org/name", f"'org/name' {_NOT_CACHED}"),
    ("hf://org/name@v2/vae", f"folder 'vae' of revision 'v2' of 'org/name' {_NOT_CACHED}"),
    ("https://huggingface.co/org/name/resolve/main/model.safetensors?download=true",
     f"file 'model.safetensors' of revision 'main' of 'org/name' {_NOT_CACHED}"),
    ("hf://datasets/org/data", f"the dataset repo org/data {_NOT_CACHED}"),
    ("https://github.com/org/repo/releases/download/v1/model.pt",
     "a URL, not a local path: weightdoctor reads local files and Hub repo ids; download it first and give its path"),
])
def test_a_pasted_url_names_the_repo_id_to_type(url: str, said: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each was "URL: no such file or directory" (`huggingface.co/org/name`: "not a folder 'name' of a Hub repo")."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().startswith(f"error: {url}: {said}"), result.stderr
    assert "is not a local path" not in result.stderr


@pytest.mark.parametrize("command", [("diff-keys", "{u}", "{m}"), ("diff-keys", "{m}", "{u}"),
                                     ("plan-devices", "{u}", "--gpu", "1GB"), ("check-dtype", "{u}"),
                                     ("convert", "{u}", "-o", "{o}"), ("shard", "{u}", "-o", "{o}", "--single")])
def test_every_command_names_the_repo_id_of_a_url(model: Path, tmp_path: Path, command: tuple[str, ...],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = "https://huggingface.co/org/name/tree/v1"
    result = run_cli(*(part.format(u=url, m=model, o=tmp_path / "out") for part in command))
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: {url}: revision 'v1' of 'org/name' {_NOT_CACHED}"), result.stderr
    assert not (tmp_path / "out").exists()


def test_the_fast_diff_keys_path_names_the_repo_id_of_a_url(model: Path) -> None:
    proc = run_subprocess("diff-keys", "hf://org/name", model, "--json", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().startswith(f"error: hf://org/name: 'org/name' {_NOT_CACHED}"), proc.stderr


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "model-v1.pt"])
def test_plan_devices_says_a_missing_weight_file_is_missing(tmp_path: Path, name: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """It looked the name up as a Hub repo id ("... is not in the Hugging Face cache at ..., and the Hub is
    unreachable"), where the five other commands say the file does not exist."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    result = run_cli("plan-devices", name, "--gpu", "1GB")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {name}: no such file or directory"
    assert run_cli("inspect", name).stderr == result.stderr


def test_plan_devices_suggests_the_weight_file_beside_a_mistyped_one(model: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(model)
    result = run_cli("plan-devices", "modle.safetensors", "--gpu", "1GB")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: modle.safetensors: no such file or directory; did you mean "
                                     "model.safetensors?")


@pytest.mark.parametrize(("size", "said"), [
    ("10", "--max 10 is 10 bytes: give a unit, e.g. 10GB (decimal) or 10GiB (binary)"),
    ("5.5", "--max 5.5 is 5 bytes: give a unit, e.g. 5.5GB (decimal) or 5.5GiB (binary)"),
])
def test_shard_refuses_a_max_without_a_unit(model: Path, tmp_path: Path, size: str, said: str) -> None:
    """`--max 10` planned 73 shards of one tensor each (10 bytes a shard), where plan-devices refuses `--gpu 10`."""
    result = run_cli("shard", model, "-o", tmp_path / "out", "--max", size, "--dry-run")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: {said}"


def test_shard_still_takes_max_0_and_a_byte_count(model: Path, tmp_path: Path) -> None:
    merged = run_cli("shard", model, "-o", tmp_path / "one", "--max", "0", "--dry-run", "--json")
    assert merged.exit_code == 0, merged.stderr
    split = run_cli("shard", model, "-o", tmp_path / "two", "--max", "600000", "--dry-run", "--json")
    assert split.exit_code == 0, split.stderr
    assert '"max_bytes": 600000' in split.stdout


@pytest.mark.parametrize(("command", "said"), [
    (("inspect", "{m}", "--target", "fp16"), "No such option: --target; --target is an option of check-dtype"),
    (("check-dtype", "{m}", "--gpu", "24GB"), "No such option: --gpu; --gpu is an option of plan-devices"),
    (("inspect", "{m}", "--values"), "No such option: --values; --values is an option of diff-keys"),
    (("diff-keys", "{m}", "{m}", "--dry-run"),
     "No such option: --dry-run; --dry-run is an option of convert and shard"),
    (("check-dtype", "{m}", "--dtype", "fp16"), "No such option: --dtype; check-dtype calls it --target"),
    (("convert", "{m}", "-o", "{o}", "--format", "bin"), "No such option: --format; convert calls it --to"),
    (("shard", "{m}", "-o", "{o}", "--to", "bin"), "No such option: --to; shard calls it --format"),
])
def test_an_option_of_another_command_says_which_takes_it(model: Path, tmp_path: Path, command: tuple[str, ...],
                                                           said: str) -> None:
    """Click guessed from this command's options alone: `inspect --target` "Possible options: --stats", `convert
    --format` "--force", `shard --to` "--json"."""
    result = run_cli(*(part.format(m=model, o=tmp_path / "out") for part in command))
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert f": {said} (see " in line
    assert "Possible options" not in line


def test_an_unknown_option_of_no_command_keeps_clicks_guess(model: Path) -> None:
    result = run_cli("inspect", model, "--fial-on", "warn")
    assert result.exit_code == 2
    assert "No such option: --fial-on (Possible options: --fail-on)" in result.stderr


@pytest.mark.parametrize(("typed", "meant"), [("safetensor", "safetensors"),
                                              (".bin", "bin"), ("pt", "bin"), ("PyTorch", "bin")])
def test_a_mistyped_output_format_names_the_one_meant(model: Path, tmp_path: Path, typed: str, meant: str) -> None:
    """Both said only "choose safetensors or bin", where every other choice (--fail-on, --strategy) names the
    close one."""
    convert = run_cli("convert", model, "-o", tmp_path / "a", "--to", typed)
    assert convert.exit_code == 2
    assert convert.stderr.strip() == f"error: --to {typed!r}: choose one of safetensors, bin; did you mean {meant!r}?"
    shard = run_cli("shard", model, "-o", tmp_path / "b", "--single", "--format", typed)
    assert shard.exit_code == 2
    assert shard.stderr.strip() == f"error: --format {typed!r}: choose one of safetensors, bin; did you mean {meant!r}?"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


_SWALLOWED_INTERRUPT = """
import os, signal, sys
import weightdoctor.plan_devices as plan

def interrupted_inside_an_import(checkpoint):
    # What numpy's import did under transformers when Ctrl-C landed in it: the KeyboardInterrupt is lost there and
    # the half-imported module then fails with another error.
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):
            pass
    except BaseException:
        pass
    raise RecursionError("maximum recursion depth exceeded")

plan.default_dtype = interrupted_inside_an_import
sys.argv = ["weightdoctor", *sys.argv[1:]]
from weightdoctor.entry import main
main()
"""


def test_ctrl_c_that_a_library_swallows_is_still_an_interrupt(model: Path) -> None:
    """Ctrl-C one second into `plan-devices` said "unexpected RecursionError: maximum recursion depth exceeded"
    and exited 2 about one run in five: the interrupt had landed in numpy's import under transformers."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _SWALLOWED_INTERRUPT, "plan-devices", str(model), "--gpu", "1GB"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 130, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip() == "error: interrupted"


def _cache_repo(tmp_path: Path, model: Path, refs: list[str]) -> None:
    """`acme/tiny-bert` in a Hub cache under tmp_path, one snapshot named by each of `refs`."""
    import shutil

    commit = "1" * 40
    repo = tmp_path / "hub" / "models--acme--tiny-bert"
    shutil.copytree(model, repo / "snapshots" / commit)
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


@pytest.mark.parametrize(("typed", "meant"), [("mian", "main"), ("v1", "v1.0"), ("V1.0", "v1.0")])
def test_a_mistyped_revision_names_the_cached_ref_meant(model: Path, tmp_path: Path, typed: str, meant: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "revision 'mian' of 'acme/tiny-bert' is not a local path and is not in the cache" (a revision is
    never a local path) and listed the refs without naming the one meant."""
    _cache_repo(tmp_path, model, ["main", "v1.0"])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for command in (("inspect", "acme/tiny-bert"), ("plan-devices", "acme/tiny-bert", "--gpu", "1GB")):
        result = run_cli(*command, "--revision", typed)
        assert result.exit_code == 2
        assert result.stderr.strip() == (
            f"error: revision {typed!r} of 'acme/tiny-bert' is not in the Hugging Face cache at {tmp_path / 'hub'} "
            "(HF_HUB_OFFLINE is set); the cache holds main -> 1111111111, v1.0 -> 1111111111; did you mean "
            f"--revision {meant} (cached)?")


@pytest.mark.parametrize(("typed", "refs", "listed"), [
    ("experimental", ["main"], "main -> 1111111111"),
    ("v1.1", ["main", "v1.0"], "main -> 1111111111, v1.0 -> 1111111111"),  # another release, not a typo
    ("refs/pr/2", ["main", "refs/pr/1"], "main -> 1111111111, refs/pr/1 -> 1111111111"),
])
def test_a_revision_close_to_no_ref_lists_the_refs_only(model: Path, tmp_path: Path, typed: str, refs: list[str],
                                                        listed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _cache_repo(tmp_path, model, refs)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "acme/tiny-bert", "--revision", typed)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(f"(HF_HUB_OFFLINE is set); the cache holds {listed}; download it with "
                                          f"`hf download acme/tiny-bert --revision {typed}` (with HF_HUB_OFFLINE "
                                          "unset)")
    assert run_cli("inspect", "acme/tiny-bert", "--revision", "main", "--json").exit_code == 0


@pytest.mark.parametrize("command", [("convert", "{m}", "-o", "{o}"), ("shard", "{m}", "-o", "{o}", "--single"),
                                     ("convert", "{m}", "-o", "{o}", "--dry-run")])
def test_a_prefix_stripped_without_its_dot_names_the_prefix_meant(model: Path, tmp_path: Path,
                                                                  command: tuple[str, ...]) -> None:
    """`--strip-prefix bert` wrote 71 tensors named `.embeddings...` (no model loads them) and exited 0."""
    result = run_cli(*(part.format(m=model, o=tmp_path / "out") for part in command), "--strip-prefix", "bert")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: stripping the prefix 'bert' leaves 71 tensor names starting with '.' ('.embeddings.LayerNorm.bias'): "
        "nothing was written; did you mean --strip-prefix 'bert.'?")
    assert not (tmp_path / "out").exists()


def test_a_prefix_stripped_with_its_dot_still_converts(model: Path, tmp_path: Path) -> None:
    result = run_cli("convert", model, "-o", tmp_path / "out", "--strip-prefix", "bert.", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"embeddings.LayerNorm.bias"' in (tmp_path / "out" / "model.safetensors").read_bytes()[:8192].decode(
        "utf-8", "replace")


@pytest.mark.parametrize(("command", "said"), [
    (("plan-devices", "{m}", "--gpu", "24", "GB"), "--gpu 24 GB: a size is one word, --gpu 24GB"),
    (("plan-devices", "{m}", "--gpu", "8GB", "--cpu", "1.5", "TiB"), "--cpu 1.5 TiB: a size is one word, --cpu 1.5TiB"),
    (("shard", "{m}", "-o", "{o}", "--max", "200", "MB"), "--max 200 MB: a size is one word, --max 200MB"),
])
def test_a_size_split_by_the_shell_says_to_join_it(model: Path, tmp_path: Path, command: tuple[str, ...],
                                                   said: str) -> None:
    """`--gpu 24 GB` said only "Got unexpected extra argument(s) (GB)"."""
    result = run_cli(*(part.format(m=model, o=tmp_path / "out") for part in command))
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert f": {said} (the shell split it in two) (see " in line
    assert not (tmp_path / "out").exists()


def test_an_extra_unit_after_a_whole_size_is_not_blamed_on_a_default(model: Path) -> None:
    """`--gpu 24GB GB`: no option was typed as a bare number (--reserve's default 0 was not typed)."""
    result = run_cli("plan-devices", model, "--gpu", "24GB", "GB")
    assert result.exit_code == 2
    assert "Got unexpected extra argument(s) (GB)" in result.stderr
    assert "--reserve" not in result.stderr


@pytest.mark.parametrize(("command", "sentence"), [
    ("inspect", "and a memory map for PyTorch pickles, which are first scanned statically"),
    ("convert", "a model folder converts every weight file and copies config and tokenizer files."),
    ("shard", "re-shards an already sharded source;"),
    ("check-dtype", "Verdicts: safe (every value exact), lossy (rounding only)"),
])
def test_command_help_is_not_broken_mid_sentence(command: str, sentence: str) -> None:
    """Typer kept the docstrings' line breaks (wrapped at 110 columns): in an 80-column terminal every `--help` but
    plan-devices' printed ragged lines ("..., which" / "are first scanned ...")."""
    proc = run_subprocess(command, "--help", env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert proc.returncode == 0
    assert sentence in proc.stdout


def test_help_keeps_the_lines_that_end_a_sentence() -> None:
    proc = run_subprocess("diff-keys", "--help", env={"COLUMNS": "200", "NO_COLOR": "1"})
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "Direction: load A into a model shaped like B." in lines
    assert "Reads headers only unless --values." in lines


@pytest.mark.parametrize("args", [["inspect", "--help"], ["--help"], ["plan-devices", "--help"]])
def test_help_into_a_closed_pipe_ends_with_141(args: list[str]) -> None:
    """`weightdoctor inspect --help | head -1` exited 1 (Rich's own answer to a broken pipe), which the exit codes
    table reads as "findings"; a report into a closed pipe ends with 141, as Unix tools do."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "weightdoctor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the help is written
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 141, stderr
    assert stderr == ""


@pytest.mark.parametrize("args", [["-h"], ["inspect", "-h"], ["diff-keys", "-h"], ["shard", "-h"]])
def test_dash_h_shows_the_help(args: list[str]) -> None:
    """`weightdoctor inspect -h` said "No such option: -h" (exit 2)."""
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    assert f"Usage: weightdoctor {' '.join(args[:-1])}".rstrip() + " [OPTIONS]" in result.stdout
    assert "Show this message and exit." in result.stdout


@pytest.mark.parametrize(("config", "said"), [
    ("https://example.com/org/name/config.json",
     "a URL, not a local path: weightdoctor reads local files and Hub repo ids; download it first and give its path"),
    ("my_config.json", "no such file or directory"),
])
def test_a_config_given_as_a_url_or_a_missing_file_says_so(model: Path, config: str, said: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config https://...` said "no such file or directory"; `--config my_config.json` (missing) was looked up
    as a Hub repo id ("... is not in the Hugging Face cache ... and the Hub is unreachable")."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    result = run_cli("diff-keys", model, "--model-class", "BertModel", "--config", config)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {config}: {said}"


def _three_shards(tmp_path: Path, model: Path) -> list[Path]:
    import shutil

    shards = [tmp_path / f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    for shard in shards:
        shutil.copy(model / "model.safetensors", shard)
    return shards


@pytest.mark.parametrize("command", ["inspect", "check-dtype", "plan-devices"])
def test_a_glob_of_shards_says_what_reads_them_together(model: Path, tmp_path: Path, command: str) -> None:
    """`inspect model-*.safetensors` (the shell expands it to every shard) said "Got unexpected extra argument(s)"."""
    result = run_cli(command, *_three_shards(tmp_path, model))
    assert result.exit_code == 2
    assert f": {command} reads one checkpoint, not 3 (a shell glob?): the folder or the index JSON reads every shard " \
        "of a sharded checkpoint; diff-keys A B compares two (see " in result.stderr


def test_diff_keys_given_three_checkpoints_says_it_compares_two(model: Path, tmp_path: Path) -> None:
    proc = run_subprocess("diff-keys", *_three_shards(tmp_path, model))
    assert proc.returncode == 2
    assert ": diff-keys compares two checkpoints, A and B, not 3 (see " in proc.stderr
    assert proc.stdout == ""


def test_an_extra_word_that_is_no_path_keeps_clicks_message(model: Path) -> None:
    result = run_cli("inspect", model, "extra")
    assert result.exit_code == 2
    assert "Got unexpected extra argument(s) (extra)" in result.stderr
