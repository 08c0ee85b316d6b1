"""Round 17 of the red team: today's merges fed hostile input. A pasted `--max-memory` (or a max_memory entry given
to --gpu) nested 100,000 deep, indexed by a superscript digit or by thousands of digits; a command name of a megabyte
and a checkpoint named `-x` given with no command; a training checkpoint keying an entry beside its state dict by an
int past str()'s limit; a diff-keys B that nearly spells a model class; a spaCy pipeline folder of thousands of
components; a FIFO as a DCP folder's metadata.json. Each command must exit 0 with a truthful report of bounded size,
or 2 with one line naming what is wrong, never 'unexpected ValueError', a traceback nor a hang.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import record_calls, run_cli, run_json, run_subprocess

_DEEP_JSON = "{" + '"0":{' * 100_000 + "}" * 100_001


def _one_error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("option", ["--max-memory", "--gpu"])
@pytest.mark.parametrize("value", [_DEEP_JSON, "{0: " + "-" * 100_000 + "1}", "{0: a" + ".a" * 100_000 + "}",
                                   "\u00b2=20GiB", '{"\u00b2": "20GiB"}', "9" * 5000 + "=20GiB"])
def test_a_max_memory_nested_deep_or_indexed_by_no_int_is_one_line(option: str, value: str) -> None:
    """A max_memory nested 100,000 deep (json's RecursionError, the parser's MemoryError), indexed by `²` (isdigit,
    which int() refuses) or by 5,000 digits (past int()'s limit): `--max-memory` ended in a traceback, `--gpu` in
    'unexpected ValueError'. Neither is a max_memory there is a --gpu form of: the usage line names the option."""
    line = _one_error_line(run_cli("plan-devices", "fixtures/example", option, value))
    assert "unexpected" not in line and "Traceback" not in line
    if option == "--max-memory":
        assert "No such option: --max-memory" in line and "(e.g. --gpu 20GiB --gpu 20GiB --cpu 64GB)" in line
    else:
        assert "--gpu" in line or "cannot parse size" in line


def test_a_max_memory_of_a_unicode_decimal_index_still_gets_its_gpu_option() -> None:
    """`٠=20GiB`: an Arabic-Indic zero is a decimal digit int() reads, GPU 0 as much as `0=20GiB`."""
    line = _one_error_line(run_cli("plan-devices", "fixtures/example", "--max-memory", "\u0660=20GiB"))
    assert line.endswith("--cpu SIZE for RAM: --gpu 20GiB (see weightdoctor plan-devices --help)"), line


def test_a_max_memory_of_more_gpus_than_planned_is_answered_at_once_in_a_bounded_line() -> None:
    """100,000 entries (`0=1GB,1=1GB,...`): each was checked, then every --gpu of the 100,000 printed in a line of
    megabytes. plan-devices plans for 1,024 GPUs at most: no form of it is offered, the line is the usual one."""
    many = ",".join(f"{index}=1GB" for index in range(100_000))
    line = _one_error_line(run_cli("plan-devices", "fixtures/example", "--max-memory", many))
    assert line.endswith("(e.g. --gpu 20GiB --gpu 20GiB --cpu 64GB) (see weightdoctor plan-devices --help)"), line


@pytest.mark.parametrize("args", [["x" * 1_000_000], ["scan", "y" * 1_000_000]])
def test_a_command_name_or_argument_of_a_megabyte_gets_a_bounded_usage_line(args: list[str]) -> None:
    """A command name of a megabyte ("No such command 'xxx...'") or a megabyte argument pasted after `scan`'s
    answer made a usage line of a megabyte; every other error line is cut at 4,000 characters, keeping its ends."""
    line = _one_error_line(run_cli(*args))
    assert len(line) < 4200 and "characters left out" in line, line[:200]
    assert line.startswith("error: weightdoctor: No such command") and line.endswith("(see weightdoctor --help)")


def test_a_checkpoint_named_like_an_option_is_pasted_as_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`weightdoctor -- -x` with a file `-x` here: "e.g. weightdoctor inspect -x", which reads -x as an option (No
    such option: -x). The path is pasted as ./-x, the same file."""
    (tmp_path / "-x").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(run_cli("--", "-x", "--json"))
    assert "'-x' is a path, not a command: name the command first, e.g. weightdoctor inspect ./-x --json " in line


def test_an_int_key_past_the_digit_limit_beside_a_nested_state_dict_is_named(tmp_path: Path) -> None:
    """{"outer": {"model": <state dict>, 10**5000: {"t": tensor}}}: the entry beside the state dict holds a tensor,
    and its name was str()'d to be matched against the training entries (optimizer, scheduler): 'unexpected
    ValueError'. It is named as every such key is, by its size."""
    one = torch.zeros(1)
    path = tmp_path / "ckpt.pt"
    torch.save({"outer": {"model": {"a.w": one, "b.w": torch.ones(1)}, 10 ** 5000: {"t": one}}}, path)
    code, report = run_json("inspect", path)
    assert code == 0 and report["nested_key"] == "outer.model" and report["num_tensors"] == 2
    assert any("outer.<int of 16,610 bits>" in warning and "not read" in warning for warning in report["warnings"])


def test_a_b_that_nearly_spells_a_model_class_is_answered_at_once() -> None:
    """diff-keys A B with B `A` + `ForA` * 32,000 + `!` (a 128 KB argument, the most one word of a command line
    holds): the check for a class given as B (`BertForSequenceClassification`) backtracked quadratically, 17 s
    (a megabyte: hours) before B was found to be no file. It is refused at once as the name it is."""
    import time

    started = time.perf_counter()
    line = _one_error_line(run_cli("diff-keys", "fixtures/example", "A" + "ForA" * 32_000 + "!"))
    assert time.perf_counter() - started < 2, time.perf_counter() - started
    assert "is a transformers class" not in line and "past the limit of 255 bytes a file name may have" in line


# The start of a thinc model file (msgpack {"nodes", ...}) holding spacy-transformers' HFShim: a transformers config
# (model_type) before the "state" key's torch.save zip.
_HF_SHIM_MODEL = b"\x84\xa5nodes\x90\xa6config\xaamodel_type\xa5state\xc4\x10PK\x03\x04" + bytes(12)


def test_a_spacy_pipeline_of_thousands_of_components_is_said_in_a_bounded_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spaCy folder of 2,000 components, each model file holding a Hugging Face model: each was read and named in
    a message grown by += (2,000: half a megabyte; 20,000: 6 s; 100,000: minutes). The first 64 are looked into,
    three named, the others counted."""
    from weightdoctor.checkpoint import foreign

    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "config.cfg").write_text('[nlp]\nlang = "en"\n')
    for index in range(2000):
        (folder / f"c{index:04d}").mkdir()
        (folder / f"c{index:04d}" / "model").write_bytes(_HF_SHIM_MODEL)
    read: list[Path] = []
    real_shim = foreign.thinc_torch_shim

    def counting_shim(path: Path) -> str | None:
        read.append(path)
        return real_shim(path)

    monkeypatch.setattr(foreign, "thinc_torch_shim", counting_shim)
    line = _one_error_line(run_cli("inspect", folder))
    assert len(read) == 64, len(read)
    assert "components c0000/, c0001/," in line and "its c0002/model holds a Hugging Face transformers model" in line
    assert line.endswith("so do the model files of 61 other components (of the first 64 looked into)"), line[-300:]
    assert "c0003/model" not in line


@pytest.mark.parametrize("named", ["__0_0.distcp", ".metadata"])
def test_a_fifo_as_the_metadata_json_of_a_dcp_folder_does_not_hang(tmp_path: Path, named: str) -> None:
    """A DCP folder (.metadata, __0_0.distcp) beside a FIFO named metadata.json: naming a shard or the .metadata
    asks whether Megatron-Core saved the folder, and open() of the FIFO waited for a writer forever. It is no
    Megatron-Core metadata: the refusal names the DCP folder and the converter, as for any other."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / ".metadata").write_bytes(b"\x80\x04N.")
    (folder / "__0_0.distcp").write_bytes(b"\0" * 16)
    os.mkfifo(folder / "metadata.json")
    result = run_subprocess("inspect", folder / named, timeout=20)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "torch.distributed.checkpoint (DCP) folder, as FSDP, torchtitan and Lightning save one" in lines[0]
    assert "dcp_to_torch_save" in lines[0]


def test_an_installed_spacy_package_beside_thousands_of_folders_opens_a_bounded_number_of_configs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed pipeline package (meta.json naming spacy_version, its pipeline one folder down) beside 1,000
    folders: each folder's config.cfg was opened to find the pipeline (50,000: 4 s more). The first 64 are looked
    into, and the pipeline among them is still named."""
    from weightdoctor.checkpoint import foreign

    folder = tmp_path / "en_core_web_sm"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"spacy_version": ">=3.7.2,<3.8.0"}))
    (folder / "en_core_web_sm-3.7.1").mkdir()
    (folder / "en_core_web_sm-3.7.1" / "config.cfg").write_text('[nlp]\nlang = "en"\n')
    for index in range(1000):
        (folder / f"x{index:04d}").mkdir()
    opened = record_calls(monkeypatch, foreign, "_nlp_config")
    line = _one_error_line(run_cli("inspect", folder))
    assert len(opened) < 80, len(opened)
    assert "it is an installed spaCy pipeline package (meta.json; its pipeline in en_core_web_sm-3.7.1/)" in line
